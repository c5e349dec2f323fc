"""Which models the service answers with, kept in step with the registry's aliases.

A background thread polls the registry; when an alias points at a new version it loads that
version first and then swaps one immutable `Variants` snapshot, so a request that already took
the old snapshot finishes on the old model and no request ever sees a half-loaded one. A version
that cannot be loaded, or is refused (see `tracking.model_loading`), leaves the previous model serving
and the service `degraded` with the reason; a refused version is not downloaded again.
"""
from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from mlflow.entities.model_registry import ModelVersion

from review_sentiment.constants import CHALLENGER, CHAMPION, MONITORING_STATUS_TAG
from review_sentiment.serving.served_model import ServedModel, load_served
from review_sentiment.tracking.model_loading import RefusedModel
from review_sentiment.tracking.model_uri import ModelRef

log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class Variants:
    """One consistent view of what is served; replaced whole, never changed in place."""

    champion: ServedModel | None = None
    challenger: ServedModel | None = None
    problem: str | None = "loading the model"  # why no champion is served
    degraded: str | None = None  # why what is served is not what the registry points at
    checked_at: str | None = None
    monitoring: dict[str, str] = field(default_factory=dict)  # variant → its version's latest check status


def choose_variant(caller_id: str | None, challenger_share: float,
                   draw: Callable[[], float] = random.random) -> str:
    """A caller id always lands on the same side (its SHA-256 read as a number in [0, 1)); a
    request without one is assigned by `draw` (at random; tests pass a seeded one)."""
    if challenger_share <= 0:
        return CHAMPION
    point = draw() if caller_id is None else int.from_bytes(hashlib.sha256(caller_id.encode()).digest()[:8]) / 2**64
    return CHALLENGER if point < challenger_share else CHAMPION


class ModelWatcher:
    """Polls `champion_ref` (and, when given, the challenger alias) every `poll_seconds`."""

    def __init__(self, champion_ref: ModelRef, challenger_ref: ModelRef | None, poll_seconds: float,
                 after_load: Callable[[], None] = lambda: None):
        """`after_load` runs after each model is loaded: the service's process passes `gc.freeze`."""
        self.refs = {CHAMPION: champion_ref, CHALLENGER: challenger_ref}
        self.poll_seconds = poll_seconds
        self._after_load = after_load
        self.current = Variants()
        self._errors: dict[str, str] = {}  # the last error per variant, logged once until it changes
        self._refused: dict[tuple[str, str], str] = {}  # (name, version) → why it will not be loaded
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.poll_seconds)

    def refresh(self) -> None:
        """One poll. A registry or loading error keeps what is served and is retried next poll."""
        loaded = {CHAMPION: self.current.champion, CHALLENGER: self.current.challenger}
        problem, troubles, monitoring = None, [], {}
        for variant, ref in self.refs.items():
            if ref is None:
                continue
            try:
                version = ref.resolve()
                loaded[variant] = self._follow(variant, ref, version, loaded[variant])
                served = loaded[variant]
                if version is not None and served is not None and served.version == str(version.version) \
                        and MONITORING_STATUS_TAG in version.tags:  # the status of the version actually served
                    monitoring[variant] = version.tags[MONITORING_STATUS_TAG]
                self._errors.pop(variant, None)
            except Exception as err:  # noqa: BLE001 — the service must outlive a bad poll
                if self._errors.get(variant) != str(err):
                    log.error("Could not refresh the %s (%s): %s", variant, ref, err)
                    self._errors[variant] = str(err)
                troubles.append(f"could not load {ref}: {err}")
                if variant == CHAMPION and loaded[variant] is None:
                    problem = troubles[-1]
        if loaded[CHAMPION] is None and problem is None:
            champion = self.refs[CHAMPION]
            assert champion is not None  # always set; only the challenger's ref may be None
            problem = f"no version of {champion.name} holds alias {champion.alias!r} yet"
        if problem and problem != self.current.problem:
            log.warning("Not ready: %s", problem)
        degraded = None if problem else "; ".join(troubles) or None
        self.current = replace(self.current, **loaded, problem=problem, degraded=degraded, monitoring=monitoring,
                               checked_at=datetime.now(UTC).isoformat(timespec="seconds"))

    def _follow(self, variant: str, ref: ModelRef, version: ModelVersion | None,
                served: ServedModel | None) -> ServedModel | None:
        if version is None:
            if served is not None and variant == CHALLENGER:
                log.info("Alias %r was removed: no challenger traffic", ref.alias)
                return None
            return served  # a champion alias that vanished: keep answering with the last one
        if served is not None and served.version == str(version.version):
            return served
        key = (version.name, str(version.version))
        if key in self._refused:
            raise RefusedModel(self._refused[key])
        try:
            model = load_served(version, ref.alias)
        except RefusedModel as err:
            self._refused[key] = str(err)
            raise
        self._after_load()
        log.info("Serving %s v%s (%s) as %s", model.name, model.version, model.family, variant)
        return model
