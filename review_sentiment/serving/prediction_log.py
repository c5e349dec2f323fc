"""The prediction log: every prediction the service makes, and the true labels fed back later.

One SQLite file (WAL) that monitoring and the A/B report read. Requests never wait for the disk:
they queue rows for a writer thread that commits them in batches. Feedback goes through the same
queue, so it is checked against every prediction answered before it.
"""
from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

log = logging.getLogger("uvicorn.error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY, request_id TEXT NOT NULL, time TEXT NOT NULL, variant TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, caller_id TEXT,
    review TEXT NOT NULL, label INTEGER NOT NULL, score REAL NOT NULL, latency_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT PRIMARY KEY REFERENCES predictions(id), label INTEGER NOT NULL, time TEXT NOT NULL
);
"""
_INSERT = "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_FEEDBACK = ("INSERT INTO feedback SELECT id, ?, ? FROM predictions WHERE id = ? "
             "ON CONFLICT(prediction_id) DO UPDATE SET label = excluded.label, time = excluded.time")


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One answered request; its rows are built on the writer thread, not while answering."""

    request_id: str
    time: str
    variant: str
    model_name: str
    model_version: str
    caller_id: str | None
    reviews: list[str]
    labels: list[int]
    scores: list[float]
    latency_ms: float

    def prediction_ids(self) -> list[str]:
        return [f"{self.request_id}.{i}" for i in range(len(self.reviews))]

    def rows(self) -> Iterator[tuple]:
        for pid, review, label, score in zip(self.prediction_ids(), self.reviews, self.labels, self.scores,
                                             strict=True):
            yield (pid, self.request_id, self.time, self.variant, self.model_name, self.model_version,
                   self.caller_id, review, label, score, self.latency_ms)


@dataclass(frozen=True)
class _Feedback:
    prediction_id: str
    label: int
    time: str
    done: Future


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a prediction log; a bad path raises sqlite3.Error at once."""
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)
    return conn


class PredictionLog:
    def __init__(self, path: Path):
        self.path = path
        self._conn = connect(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, request: LoggedRequest) -> None:
        self._queue.put(request)

    def feedback(self, prediction_id: str, label: int, time: str) -> Future:
        """Resolves to True once stored, False if no logged prediction has that id."""
        done: Future = Future()
        self._queue.put(_Feedback(prediction_id, label, time, done))
        return done

    def close(self) -> None:
        """Write everything queued, then stop."""
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _write(self) -> None:
        running = True
        while running:
            items = [self._queue.get()]
            while not self._queue.empty() and len(items) < 1000:
                items.append(self._queue.get())
            running = None not in items
            try:
                self._commit([item for item in items if item is not None])
            except Exception as err:  # noqa: BLE001 — the writer must outlive one bad batch
                log.error("Prediction log %s: could not write %d items: %s", self.path, len(items), err)
                for item in items:
                    if isinstance(item, _Feedback):
                        item.done.set_exception(err)

    def _commit(self, items: list) -> None:
        """Write one batch in one transaction, then tell feedback callers whether their id was found."""
        answered = []
        with self._conn:
            for item in items:
                if isinstance(item, _Feedback):
                    stored = self._conn.execute(_FEEDBACK, (item.label, item.time, item.prediction_id)).rowcount
                    answered.append((item.done, stored > 0))
                else:
                    self._conn.executemany(_INSERT, item.rows())
        for done, stored in answered:
            done.set_result(stored)


def read_log(path: Path) -> pd.DataFrame:
    """All logged predictions with their fed-back true label (NA where none)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prediction log here (start the service, or pass --prediction-log)")
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        try:
            return pd.read_sql_query(
                "SELECT p.*, f.label AS true_label FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.id",
                conn,
            )
        except pd.errors.DatabaseError as err:
            raise ValueError(f"{path}: not a prediction log ({err.__cause__ or err})") from None
