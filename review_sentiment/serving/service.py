"""Starting the prediction service (model references, prediction log, watcher, uvicorn) and
printing its A/B report: what `serve_api.py` runs."""
from __future__ import annotations

import gc
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from review_sentiment.constants import API_KEY_ENV, CHALLENGER
from review_sentiment.databases import without_password
from review_sentiment.monitoring.logged import read_log
from review_sentiment.serving.ab_report import format_report
from review_sentiment.serving.app import create_app
from review_sentiment.serving.log_backends import LogDatabaseError
from review_sentiment.serving.model_watcher import ModelWatcher
from review_sentiment.serving.prediction_log import PredictionLog
from review_sentiment.serving.schemas import MAX_REVIEWS
from review_sentiment.tracking.model_uri import ModelRef


@dataclass(frozen=True)
class ServiceSettings:
    """What the service CLI's flags choose."""

    host: str
    port: int
    model_uri: str
    challenger_share: float
    poll_seconds: float
    prediction_log: str | Path | None  # an SQLite file or a PostgreSQL URL; None: log nothing
    log_queue_rows: int
    log_wait_seconds: float
    shutdown_seconds: float
    api_key: str | None
    access_log: bool


def is_loopback(host: str) -> bool:
    """Only this machine can reach `host` (a name other than localhost may resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(settings: ServiceSettings) -> FastAPI:
    """The app, with its model references, prediction log and API key checked: a bad model URI, an
    unusable log or a reachable address without a key raises ValueError here, before anything listens."""
    champion = ModelRef.parse(settings.model_uri)
    if settings.api_key is None and not is_loopback(settings.host):
        raise ValueError(f"--host {settings.host} can be reached from other machines, so POST /feedback needs a "
                         f"token: pass --api-key KEY or set {API_KEY_ENV}")
    if settings.api_key is not None and not (settings.api_key.isascii() and settings.api_key.isprintable()
                                             and " " not in settings.api_key):
        raise ValueError("the API key must be printable ASCII without spaces: it travels in an HTTP header")
    if settings.log_queue_rows < MAX_REVIEWS:
        raise ValueError(f"--log-queue-rows must be at least {MAX_REVIEWS}, the most reviews one request may carry "
                         f"(got {settings.log_queue_rows})")
    prediction_log = None
    if settings.prediction_log is not None:
        try:
            prediction_log = PredictionLog(settings.prediction_log, settings.log_queue_rows, settings.log_wait_seconds)
        except LogDatabaseError as err:
            raise ValueError(f"{without_password(str(settings.prediction_log))}: cannot use as the prediction log "
                             f"({err})") from None
    challenger = ModelRef(champion.name, CHALLENGER, None) if settings.challenger_share > 0 else None
    # The service owns its process: what a load brings lives long, so it leaves every later collection
    # (gc.freeze; a full collection took 170 ms with it in)
    watcher = ModelWatcher(champion, challenger, settings.poll_seconds, after_load=gc.freeze)
    sharing = f" and {challenger} for {settings.challenger_share:.0%} of traffic" if challenger else ""
    logged = f"predictions logged to {prediction_log.name}" if prediction_log else "no prediction log"
    print(f"Serving {champion}{sharing}; {logged}", flush=True)
    if settings.api_key:
        print("POST /feedback requires the header 'Authorization: Bearer <API key>'", flush=True)
    return create_app(watcher, prediction_log, settings.challenger_share, settings.api_key)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve until SIGINT/SIGTERM; the app's lifespan starts the watcher and, at the end, writes what
    is still queued for the log before the process exits."""
    # uvicorn annotates the grace period as int; it is an asyncio timeout, where a float works
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=settings.access_log, log_level="info",
                timeout_graceful_shutdown=settings.shutdown_seconds)  # type: ignore[arg-type]


def print_report(prediction_log: str | Path) -> None:
    """The champion/challenger report; FileNotFoundError or ValueError if it is not a log."""
    print(format_report(read_log(prediction_log), without_password(str(prediction_log))))
