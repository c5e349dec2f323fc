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
with Retry-After) instead of losing the row or letting memory grow. A batch that fails is retried row
by row, so one bad row loses only itself, counted; a locked, full or failing disk is retried with
backoff (never waited on: the loop must keep answering) while `state` says so. Feedback goes
through the same queue, after the predictions answered before it.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import psycopg

from review_sentiment.constants import ANONYMOUS
from review_sentiment.databases import is_postgres, without_password

log = logging.getLogger("uvicorn.error")

SCHEMA_VERSION = 3  # PRAGMA user_version; 0 is the unversioned log of the first service
_TABLES = """
CREATE TABLE IF NOT EXISTS predictions (
    id TEXT PRIMARY KEY, request_id TEXT NOT NULL, time TEXT NOT NULL, variant TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, caller_id TEXT,
    review TEXT NOT NULL, label INTEGER NOT NULL, score REAL NOT NULL, latency_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    prediction_id TEXT PRIMARY KEY REFERENCES predictions(id), label INTEGER NOT NULL, time TEXT NOT NULL
);
"""
_MIGRATIONS = {  # from version N to N + 1, applied in order on open, all in one transaction
    0: ["CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions(time)"],
    # who gave each label (an API key's identity, or anonymous) and from which address; earlier labels: unknown
    1: ["ALTER TABLE feedback ADD COLUMN giver TEXT", "ALTER TABLE feedback ADD COLUMN client TEXT"],
    # the log's identity, made once with it: checks name the log by it, not by the path as typed (a
    # relative and an absolute path are one log; a new file at an old path is another)
    # and the calibrated probability each answer gave (NULL before, and for versions without calibration)
    2: ["CREATE TABLE IF NOT EXISTS log_identity (id TEXT NOT NULL)",
        "INSERT INTO log_identity (id) SELECT lower(hex(randomblob(16)))"
        " WHERE NOT EXISTS (SELECT 1 FROM log_identity)",
        "ALTER TABLE predictions ADD COLUMN probability REAL"],
}
# PostgreSQL has no rowid: `row` numbers rows in insertion order for the monitoring windows. It starts
# at the current schema (there never was an unversioned PostgreSQL log).
_POSTGRES_TABLES = [
    "CREATE TABLE IF NOT EXISTS predictions (row BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, request_id TEXT NOT NULL,"
    " time TEXT NOT NULL, variant TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,"
    " caller_id TEXT, review TEXT NOT NULL, label INTEGER NOT NULL, score DOUBLE PRECISION NOT NULL,"
    " latency_ms DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS feedback (row BIGSERIAL UNIQUE, prediction_id TEXT PRIMARY KEY REFERENCES"
    " predictions(id), label INTEGER NOT NULL, time TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS predictions_by_time ON predictions(time)",
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
]
_POSTGRES_MIGRATIONS = {  # to version N + 1 from N (a new log takes them all)
    1: ["ALTER TABLE feedback ADD COLUMN IF NOT EXISTS giver TEXT",
        "ALTER TABLE feedback ADD COLUMN IF NOT EXISTS client TEXT"],
    # `row` comes from a sequence when a row is inserted, but transactions commit in another order: a
    # reader past row N can still see a row below N commit later. Each row records the transaction that
    # wrote it (`xid`), and a reader takes what is below its snapshot's xmin: every transaction there
    # has ended, so that set of rows is final. Rows logged before this have none (NULL, not the
    # migration's own id: the column gets its default after it is added) and keep `row` (their set is
    # final too: adding the column waited for every transaction writing the table). A replica of
    # schema 2 still running writes the column too (its default).
    2: ["ALTER TABLE predictions ADD COLUMN IF NOT EXISTS xid xid8",
        "ALTER TABLE predictions ALTER COLUMN xid SET DEFAULT pg_current_xact_id()",
        "CREATE INDEX IF NOT EXISTS predictions_by_xid ON predictions(xid) WHERE xid IS NOT NULL",
        "ALTER TABLE feedback ADD COLUMN IF NOT EXISTS xid xid8",
        "ALTER TABLE feedback ALTER COLUMN xid SET DEFAULT pg_current_xact_id()",
        "CREATE INDEX IF NOT EXISTS feedback_by_xid ON feedback(xid) WHERE xid IS NOT NULL",
        "CREATE TABLE IF NOT EXISTS log_identity (id TEXT NOT NULL)",
        "INSERT INTO log_identity (id) SELECT gen_random_uuid()::text WHERE NOT EXISTS (SELECT FROM log_identity)",
        "ALTER TABLE predictions ADD COLUMN IF NOT EXISTS probability DOUBLE PRECISION"],
}
_SCHEMA_LOCK = 7_215_301  # an advisory lock id: replicas starting together create the tables one at a time
_COLUMNS = ("id", "request_id", "time", "variant", "model_name", "model_version", "caller_id", "review", "label",
            "score", "latency_ms", "probability")
_INSERT = f"INSERT INTO predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) " \
          "ON CONFLICT(id) DO NOTHING"  # a commit whose answer was lost is retried: its rows stand
_FEEDBACK = "INSERT INTO feedback (prediction_id, label, time, giver, client) SELECT id, ?, ?, ?, ? FROM predictions " \
            "WHERE id = ? " \
            "ON CONFLICT(prediction_id) DO NOTHING"
_FED_BACK = "SELECT label FROM feedback WHERE prediction_id = ?"
_UNAVAILABLE = (sqlite3.OperationalError, psycopg.OperationalError)  # locked, busy, full, down: not the rows' fault
_CHECKPOINT_SECONDS = 1.0
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

    def rows(self) -> Iterator[tuple]:
        probabilities = self.probabilities or [None] * len(self.reviews)
        for pid, review, label, score, probability in zip(self.prediction_ids, self.reviews, self.labels,
                                                          self.scores, probabilities, strict=True):
            yield (pid, self.request_id, self.time, self.variant, self.model_name, self.model_version,
                   self.caller_id, review, label, score, self.latency_ms, probability)


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


class LogDatabaseError(Exception):
    """The log cannot be opened: a bad path or URL, a database that refuses us, or a newer schema."""


def connect(target: str | Path) -> sqlite3.Connection | psycopg.Connection:
    """Open (creating or migrating) a prediction log: an SQLite file, or PostgreSQL for a `postgresql://`
    URL; raises LogDatabaseError naming the problem."""
    try:
        return _connect_postgres(str(target)) if is_postgres(str(target)) else _connect_sqlite(Path(target))
    except (sqlite3.Error, psycopg.Error) as err:
        raise LogDatabaseError(str(err).strip().splitlines()[0]) from None


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN IMMEDIATE")  # replicas opening an old log together migrate it once, whole or not at all
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer service (schema {version}, this one knows "
                                        f"{SCHEMA_VERSION})")
        for statement in _TABLES.split(";"):
            conn.execute(statement)
        for step in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    conn.execute("PRAGMA busy_timeout = 0")  # a locked file is retried later, never waited on
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpoint thread does it
    return conn


def _connect_postgres(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, connect_timeout=3, options="-c statement_timeout=5000")  # the loop waits on it
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _POSTGRES_TABLES:
            conn.execute(statement)
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if version is None or version < SCHEMA_VERSION:
            for step in range(version or 1, SCHEMA_VERSION):  # the tables above are schema 1
                for statement in _POSTGRES_MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            raise psycopg.DatabaseError(f"written by a newer service (schema {version}, this one knows "
                                        f"{SCHEMA_VERSION})")
    return conn


class PredictionLog:
    """Open it anywhere; `record`, `feedback` and `close` are called from the service's event loop."""

    def __init__(self, target: str | Path, max_queued_rows: int = 20_000, wait_seconds: float = 10.0):
        self.target = target
        self.name = without_password(str(target))  # for logs and /health: never the password
        self.max_queued_rows = max_queued_rows
        self.wait_seconds = wait_seconds
        self.state = WriterState()
        self._conn = connect(target)
        self._pending: list[_Predictions | _Feedback] = []
        self._flush: asyncio.Handle | None = None
        self._pause = 0.0
        self._stop = threading.Event()
        self._checkpoints = threading.Thread(target=self._checkpoint, name="prediction-log-checkpoints", daemon=True)
        if isinstance(self._conn, sqlite3.Connection):  # PostgreSQL checkpoints by itself
            self._checkpoints.start()

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
        self._stop.set()
        if self._checkpoints.is_alive():
            self._checkpoints.join()
        self._conn.close()
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
        except _UNAVAILABLE as err:
            return self._retrying(batch, err)
        except Exception:  # noqa: BLE001 — something in the batch was refused: find which, one by one
            pass
        for n, item in enumerate(batch):
            try:
                self._commit([item])
            except _UNAVAILABLE as err:
                return self._retrying(batch[n:], err)
            except Exception as err:  # noqa: BLE001 — this item alone is lost, and counted
                self._failed(item, err)
        return []

    def _commit(self, batch: list[_Predictions | _Feedback]) -> None:
        if isinstance(self._conn, psycopg.Connection) and self._conn.closed:  # the server went away: try anew
            self._conn = _connect_postgres(str(self.target))  # OperationalError while it stays away
        with self._transaction():
            outcomes = [self._apply(item) for item in batch]
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome in (None, Feedback.STORED):  # on record now; a repeated, refused or unknown label is not
                self.state.written_rows += item.size
            self.state.queued_rows -= item.size
            if not item.done.done():  # a waiter that timed out or went away needs nothing
                item.done.set_result(outcome)

    def _transaction(self) -> AbstractContextManager:
        return self._conn.transaction() if isinstance(self._conn, psycopg.Connection) else self._conn

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if isinstance(self._conn, psycopg.Connection) else statement

    def _apply(self, item: _Predictions | _Feedback) -> Feedback | None:
        if isinstance(item, _Feedback):
            if self._conn.execute(self._sql(_FEEDBACK), (item.label, item.time, item.giver, item.client,
                                                         item.prediction_id)).rowcount:
                return Feedback.STORED
            recorded = self._conn.execute(self._sql(_FED_BACK), (item.prediction_id,)).fetchone()
            if recorded is None:
                return Feedback.UNKNOWN
            return Feedback.SAME if recorded[0] == item.label else Feedback.CONFLICT
        rows = item.request.rows()
        if isinstance(self._conn, psycopg.Connection):  # PostgreSQL's text cannot hold NUL: U+FFFD stands in
            rows = (tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row) for row in rows)
        self._conn.cursor().executemany(self._sql(_INSERT), list(rows))
        return None

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

    def _checkpoint(self) -> None:
        """Move committed pages from the WAL into the database file, off the event loop."""
        with closing(sqlite3.connect(self.target, timeout=0)) as conn:
            stopping = False
            while not stopping:
                stopping = self._stop.wait(_CHECKPOINT_SECONDS)
                try:  # the last one, at close, also empties the WAL file
                    conn.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if stopping else 'PASSIVE'})")
                except sqlite3.Error as err:  # busy or failing: the next one will do
                    log.debug("Prediction log %s: checkpoint skipped: %s", self.name, err)

