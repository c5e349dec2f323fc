"""The prediction log: every prediction the service answers, and the true labels fed back later.

One SQLite file (WAL), or a PostgreSQL database that several replicas of the service share (pass a
`postgresql://` URL), which monitoring and the A/B report read. A prediction is answered only once it
is committed, so a SIGKILL loses no answered prediction. Requests queue their rows and wait; one
commit per turn of the event loop writes everything queued (a group commit) and releases every
request in it. It runs on the loop itself: handing rows to a writer thread and back costs ~90 µs a
request here, more than the commit. WAL with synchronous=NORMAL survives a killed process (not a
power cut) without an fsync per commit; checkpoints, which do fsync, run on a background thread so
that a slow disk never stalls the loop.

The queue is bounded in rows: when it is full, `record` refuses at once (the service answers 503
with Retry-After) instead of losing the row or letting memory grow. A batch that fails is retried
request by request, so one bad request loses only its own rows, counted; a locked, full or failing disk is retried with
backoff (never waited on: the loop must keep answering) while `state` says so. Feedback goes
through the same queue, after the predictions answered before it. The SQLite file and the PostgreSQL
database are `log_backends`, behind one protocol.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from review_sentiment.constants import ANONYMOUS
from review_sentiment.databases import without_password
from review_sentiment.serving.log_backends import open_backend

log = logging.getLogger("uvicorn.error")

_MAX_PAUSE_SECONDS = 0.5  # the longest wait between two tries of a busy or failing disk


def new_prediction_ids(count: int) -> list[str]:
    """Each 128 random bits, so no caller can guess another's id, after the time in milliseconds, so
    ids grow and each row appends to the id index instead of landing at random (3× cheaper to insert)."""
    now, random = f"{time.time_ns() // 1_000_000:012x}", secrets.token_hex(16 * count)
    return [now + random[32 * i:32 * (i + 1)] for i in range(count)]


class LogFull(Exception):
    """The queue holds its limit of rows: come back shortly (the service answers 503, Retry-After)."""


class LogStuck(TimeoutError):
    """Not committed within the log's wait: the disk is locked or failing. The rows stay queued and
    are written once it recovers; the waiter is released now (the service answers 503, Retry-After)."""


class Feedback(Enum):
    STORED = "stored"
    SAME = "same"  # this label was already recorded: nothing to do
    CONFLICT = "conflict"  # a different label was recorded first: refused, never overwritten
    UNKNOWN = "unknown"  # no logged prediction has that id


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """One request's predictions; rows are built when committed, not while answering."""

    request_id: str
    prediction_ids: list[str]
    time: str
    variant: str
    model_name: str
    model_version: str
    caller_id: str | None
    reviews: list[str]
    labels: list[int]
    scores: list[float]
    latency_ms: float
    probabilities: list[float] | None = None  # calibrated P(positive); None: the version has no calibration

    def shared(self) -> tuple[object, ...]:
        """What every row of this request holds, in `log_backends.SHARED_COLUMNS` order."""
        return (self.request_id, self.time, self.variant, self.model_name, self.model_version, self.caller_id,
                self.latency_ms)

    def rows(self) -> list[tuple[object, ...]]:
        """Each prediction's own values, in `log_backends.ROW_COLUMNS` order."""
        probabilities: Sequence[float | None] = self.probabilities or [None] * len(self.reviews)
        return list(zip(self.prediction_ids, self.reviews, self.labels, self.scores, probabilities, strict=True))


@dataclass(frozen=True)
class _Predictions:
    request: LoggedRequest
    done: asyncio.Future
    queued_at: float

    @property
    def size(self) -> int:
        return len(self.request.reviews)


@dataclass(frozen=True)
class _Feedback:
    prediction_id: str
    label: int
    time: str
    giver: str
    client: str | None
    done: asyncio.Future
    queued_at: float
    size: int = 1  # one feedback row: the queue's bound holds it too


@dataclass
class WriterState:
    """What /health reports about the log."""

    state: str = "writing"  # "writing", "retrying: <error>", "stopped"
    queued_rows: int = 0
    written_rows: int = 0
    failed_rows: int = 0  # rows refused by the database itself, one by one
    rejected_requests: int = 0  # refused while the queue was full
    last_error: str | None = None

    def report(self) -> dict[str, object]:
        return dict(vars(self))


class PredictionLog:
    """Open it anywhere; `record`, `feedback` and `close` are called from the service's event loop."""

    def __init__(self, target: str | Path, max_queued_rows: int = 20_000, wait_seconds: float = 10.0):
        self.target = target
        self.name = without_password(str(target))  # for logs and /health: never the password
        self.max_queued_rows = max_queued_rows
        self.wait_seconds = wait_seconds
        self.state = WriterState()
        self._db = open_backend(target, self.name)
        self._pending: list[_Predictions | _Feedback] = []
        self._flush: asyncio.Handle | None = None
        self._pause = 0.0

    def record(self, request: LoggedRequest) -> asyncio.Future:
        """Resolves (to None) once the request's predictions are committed; raises LogFull at once when
        the queue is at its limit. The future fails with LogStuck when not committed within
        `wait_seconds`, or with the database's error if it refused these rows."""
        return self._queue(_Predictions(request, asyncio.get_running_loop().create_future(), time.monotonic()))

    def feedback(self, prediction_id: str, label: int, at: str, giver: str = ANONYMOUS,
                 client: str | None = None) -> asyncio.Future:
        """Resolves to a `Feedback` outcome once decided (LogFull and LogStuck, as for `record`). `giver`:
        who gave the label (an API key's identity, or anonymous); `client`: from which address."""
        return self._queue(_Feedback(prediction_id, label, at, giver, client,
                                     asyncio.get_running_loop().create_future(), time.monotonic()))

    async def close(self, timeout: float = 30.0) -> None:
        """Write everything queued (trying for at most `timeout` seconds), then stop."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._pending:
            log.error("Prediction log %s: still failing after %.0f s at shutdown (%s); %d rows not written",
                      self.name, timeout, self.state.last_error, self.state.queued_rows)
        if self._flush is not None:
            self._flush.cancel()
        self._db.close()
        self.state.state = "stopped"

    def _queue(self, item: _Predictions | _Feedback) -> asyncio.Future:
        if self.state.queued_rows + item.size > self.max_queued_rows:
            self.state.rejected_requests += 1
            raise LogFull(f"{self.state.queued_rows} rows are waiting to be written")
        self._pending.append(item)
        self.state.queued_rows += item.size
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_soon(self._write_pending)
        return item.done

    def _write_pending(self) -> None:
        """Commit what is queued; what could not be written yet is tried again after a pause."""
        self._flush = None
        batch, self._pending = self._pending, []
        try:
            left = self._write(batch)
        except Exception as err:  # noqa: BLE001 — nothing one batch does may stop the log
            log.error("Prediction log %s: writing failed: %s", self.name, err)
            left, self.state.last_error = batch, str(err)
        if not left:
            self._pause, self.state.state = 0.0, "writing"
            return
        self._pending[:0] = left
        self._release_waiters_past(time.monotonic() - self.wait_seconds)
        self._pause = min(max(self._pause * 2, 0.01), _MAX_PAUSE_SECONDS)
        self._flush = asyncio.get_running_loop().call_later(self._pause, self._write_pending)

    def _release_waiters_past(self, queued_before: float) -> None:
        """A stuck disk is checked here, on the retry path, not by a timer per request."""
        for item in self._pending:
            if item.queued_at < queued_before and not item.done.done():
                item.done.set_exception(LogStuck(f"not written for {self.wait_seconds:g} s"))

    def _write(self, batch: list[_Predictions | _Feedback]) -> list[_Predictions | _Feedback]:
        """Commit the batch in one transaction, or else item by item to find the rows the database
        refuses; returns the items left to try again (the disk is busy or failing)."""
        try:
            self._commit(batch)
            return []
        except self._db.unavailable as err:
            return self._retrying(batch, err)
        except Exception:  # noqa: BLE001 — something in the batch was refused: find which, one by one
            pass
        for n, item in enumerate(batch):
            try:
                self._commit([item])
            except self._db.unavailable as err:
                return self._retrying(batch[n:], err)
            except Exception as err:  # noqa: BLE001 — this item alone is lost, and counted
                self._failed(item, err)
        return []

    def _commit(self, batch: list[_Predictions | _Feedback]) -> None:
        self._db.reopen_if_closed()
        with self._db.transaction():
            outcomes = [self._apply(item) for item in batch]
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome in (None, Feedback.STORED):  # on record now; a repeated, refused or unknown label is not
                self.state.written_rows += item.size
            self.state.queued_rows -= item.size
            if not item.done.done():  # a waiter that timed out or went away needs nothing
                item.done.set_result(outcome)

    def _apply(self, item: _Predictions | _Feedback) -> Feedback | None:
        if isinstance(item, _Predictions):
            self._db.insert(item.request.shared(), item.request.rows())
            return None
        if self._db.add_feedback(item.prediction_id, item.label, item.time, item.giver, item.client):
            return Feedback.STORED
        recorded = self._db.recorded_label(item.prediction_id)
        if recorded is None:
            return Feedback.UNKNOWN
        return Feedback.SAME if recorded == item.label else Feedback.CONFLICT

    def _retrying(self, left: list, err: Exception) -> list:
        self.state.state, self.state.last_error = f"retrying: {err}", str(err)
        return left

    def _failed(self, item: _Predictions | _Feedback, err: Exception) -> None:
        self.state.failed_rows += item.size
        self.state.queued_rows -= item.size
        self.state.last_error = str(err)
        log.error("Prediction log %s: %d rows not written: %s", self.name, item.size, err)
        if not item.done.done():
            item.done.set_exception(err)
