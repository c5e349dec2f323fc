"""Starting the prediction service (model references, prediction log, watcher, uvicorn) and
printing its A/B report: what `serve_api.py` runs."""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from review_sentiment.constants import CHALLENGER
from review_sentiment.serving.ab_report import format_report
from review_sentiment.serving.app import create_app
from review_sentiment.serving.model_watcher import ModelWatcher
from review_sentiment.serving.prediction_log import PredictionLog, read_log
from review_sentiment.tracking.model_logging import quiet_mlflow_warnings
from review_sentiment.tracking.model_uri import ModelRef


@dataclass(frozen=True)
class ServiceSettings:
    """What the service CLI's flags choose."""

    host: str
    port: int
    model_uri: str
    challenger_share: float
    poll_seconds: float
    prediction_log: Path
    access_log: bool


def build_app(settings: ServiceSettings) -> FastAPI:
    """The app, with its model references and prediction log checked: a bad model URI or an unusable
    log raises ValueError here, before anything listens."""
    quiet_mlflow_warnings()
    champion = ModelRef.parse(settings.model_uri)
    try:
        prediction_log = PredictionLog(settings.prediction_log)
    except sqlite3.Error as err:
        raise ValueError(f"{settings.prediction_log}: cannot use as the prediction log ({err})") from None
    challenger = ModelRef(champion.name, CHALLENGER, None) if settings.challenger_share > 0 else None
    watcher = ModelWatcher(champion, challenger, settings.poll_seconds)
    sharing = f" and {challenger} for {settings.challenger_share:.0%} of traffic" if challenger else ""
    print(f"Serving {champion}{sharing}; predictions logged to {settings.prediction_log}", flush=True)
    return create_app(watcher, prediction_log, settings.challenger_share)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Serve until SIGINT/SIGTERM; the app's lifespan starts the watcher and drains the log."""
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=settings.access_log, log_level="info")


def print_report(prediction_log: Path) -> None:
    """The champion/challenger report; FileNotFoundError or ValueError if the file is not a log."""
    quiet_mlflow_warnings()
    print(format_report(read_log(prediction_log), str(prediction_log)))
