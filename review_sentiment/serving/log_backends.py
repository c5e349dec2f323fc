"""Where the prediction log's rows go: an SQLite file or a PostgreSQL database, behind one small
protocol (`LogBackend`) so that the log's group commit, retries and waiters (`prediction_log`) are
written once. Each backend makes or migrates its own schema when opened."""
from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from contextlib import AbstractContextManager, closing
from itertools import chain
from pathlib import Path
from typing import Protocol

import psycopg

from review_sentiment.databases import is_postgres

log = logging.getLogger("uvicorn.error")

SCHEMA_VERSION = 4  # PRAGMA user_version; 0 is the unversioned log of the first service
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
# No query of ours reads the log by time (checks read by row or transaction id, reports everything), and
# the index on it cost each batch of 100 rows 0.1 ms of its 0.55 ms insert and three of its ~22 WAL pages
_DROP_TIME_INDEX = "DROP INDEX IF EXISTS predictions_by_time"
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
    3: [_DROP_TIME_INDEX],
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
    3: [_DROP_TIME_INDEX],
}
_SCHEMA_LOCK = 7_215_301  # an advisory lock id: replicas starting together create the tables one at a time
SHARED_COLUMNS = ("request_id", "time", "variant", "model_name", "model_version", "caller_id", "latency_ms")
ROW_COLUMNS = ("id", "review", "label", "score", "probability")  # a request's own for each of its reviews
_COLUMNS = ROW_COLUMNS + SHARED_COLUMNS
_INSERT = f"INSERT INTO predictions ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) " \
          "ON CONFLICT(id) DO NOTHING"  # a commit whose answer was lost is retried: its rows stand
_CHUNKS = tuple(2 ** n for n in range(9, -1, -1))  # the row counts of `_insert_shared` statements: 512, 256, ..., 1
_FEEDBACK = "INSERT INTO feedback (prediction_id, label, time, giver, client) SELECT id, ?, ?, ?, ? FROM predictions " \
            "WHERE id = ? " \
            "ON CONFLICT(prediction_id) DO NOTHING"
_FED_BACK = "SELECT label FROM feedback WHERE prediction_id = ?"
_CHECKPOINT_SECONDS = 1.0
_WAL_KEPT_BYTES = 64 * 2**20


class LogDatabaseError(Exception):
    """The log cannot be opened: a bad path or URL, a database that refuses us, or a newer schema."""


class LogBackend(Protocol):
    """One database of the log. `insert` and `add_feedback` run inside `transaction()`."""

    unavailable: tuple[type[Exception], ...]  # errors that are the database's state (locked, down), not the rows'

    def transaction(self) -> AbstractContextManager[object]: ...

    def insert(self, shared: tuple[object, ...], rows: list[tuple[object, ...]]) -> None:
        """One request's predictions: the values its rows share (SHARED_COLUMNS) and each row's own (ROW_COLUMNS)."""
        ...

    def add_feedback(self, prediction_id: str, label: int, at: str, giver: str, client: str | None) -> bool:
        """Whether the label was stored (False: the prediction is unknown or already has one)."""
        ...

    def recorded_label(self, prediction_id: str) -> int | None: ...

    def reopen_if_closed(self) -> None: ...

    def close(self) -> None: ...


def open_backend(target: str | Path, name: str) -> LogBackend:
    """Open (creating or migrating) a prediction log: an SQLite file, or PostgreSQL for a `postgresql://`
    URL; raises LogDatabaseError naming the problem. `name`: the log as printed (no password)."""
    try:
        if is_postgres(str(target)):
            return PostgresLog(str(target))
        return SqliteLog(Path(target), name)
    except (sqlite3.Error, psycopg.Error) as err:
        raise LogDatabaseError(str(err).strip().splitlines()[0]) from None


class SqliteLog:
    """One SQLite file in WAL mode, synchronous=NORMAL (a killed process loses nothing committed);
    checkpoints, which fsync, run on a thread of their own so a slow disk never stalls the loop."""

    unavailable: tuple[type[Exception], ...] = (sqlite3.OperationalError,)

    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name
        self._conn = _connect_sqlite(path)
        self._stop = threading.Event()
        self._checkpoints = threading.Thread(target=self._checkpoint, name="prediction-log-checkpoints", daemon=True)
        self._checkpoints.start()

    def transaction(self) -> AbstractContextManager[object]:
        return self._conn

    def insert(self, shared: tuple[object, ...], rows: list[tuple[object, ...]]) -> None:
        """The shared values bound once per statement, not once per row: binding is most of what an insert
        costs here (100 rows: 0.66 -> 0.54 ms). Rows go in chunks of 512, 256, ..., 1, so at most ten
        statements are ever prepared, whatever the request sizes; a chunk never binds more values than
        this SQLite allows (999 before 3.32, so 128 rows at most there)."""
        most = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        start = 0
        for size in (size for size in _CHUNKS if len(SHARED_COLUMNS) + len(ROW_COLUMNS) * size <= most):
            while len(rows) - start >= size:
                self._conn.execute(_insert_shared(size), shared + tuple(chain.from_iterable(rows[start:start + size])))
                start += size

    def add_feedback(self, prediction_id: str, label: int, at: str, giver: str, client: str | None) -> bool:
        return bool(self._conn.execute(_FEEDBACK, (label, at, giver, client, prediction_id)).rowcount)

    def recorded_label(self, prediction_id: str) -> int | None:
        row = self._conn.execute(_FED_BACK, (prediction_id,)).fetchone()
        return None if row is None else int(row[0])

    def reopen_if_closed(self) -> None:
        """A file does not go away."""

    def close(self) -> None:
        self._stop.set()
        self._checkpoints.join()
        self._conn.close()

    def _checkpoint(self) -> None:
        """Move committed pages from the WAL into the database file, off the event loop."""
        with closing(sqlite3.connect(self.path, timeout=0)) as conn:
            stopping = False
            while not stopping:
                stopping = self._stop.wait(_CHECKPOINT_SECONDS)
                try:  # the last one, at close, also empties the WAL file
                    conn.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if stopping else 'PASSIVE'})")
                except sqlite3.Error as err:  # busy or failing: the next one will do
                    log.debug("Prediction log %s: checkpoint skipped: %s", self.name, err)


class PostgresLog:
    """A PostgreSQL database several replicas share; it checkpoints by itself."""

    unavailable: tuple[type[Exception], ...] = (psycopg.OperationalError,)

    def __init__(self, url: str):
        self.url = url
        self._conn = _connect_postgres(url)

    def transaction(self) -> AbstractContextManager[object]:
        return self._conn.transaction()

    def insert(self, shared: tuple[object, ...], rows: list[tuple[object, ...]]) -> None:
        # PostgreSQL's text cannot hold NUL: U+FFFD stands in
        clean = [tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row + shared) for row in rows]
        self._conn.cursor().executemany(_postgres(_INSERT), clean)

    def add_feedback(self, prediction_id: str, label: int, at: str, giver: str, client: str | None) -> bool:
        return bool(self._conn.execute(_postgres(_FEEDBACK), (label, at, giver, client, prediction_id)).rowcount)

    def recorded_label(self, prediction_id: str) -> int | None:
        row = self._conn.execute(_postgres(_FED_BACK), (prediction_id,)).fetchone()
        return None if row is None else int(row[0])

    def reopen_if_closed(self) -> None:
        """The server went away: try anew (OperationalError while it stays away)."""
        if self._conn.closed:
            self._conn = _connect_postgres(self.url)

    def close(self) -> None:
        self._conn.close()


@functools.cache
def _insert_shared(size: int) -> str:
    """INSERT of `size` rows of one request: the shared values are ?1-?7, then each row's own five."""
    values = ", ".join([f"({', '.join('?' * len(ROW_COLUMNS))})"] * size)
    shared = ", ".join(f"?{n}" for n in range(1, len(SHARED_COLUMNS) + 1))
    own = ", ".join(f"column{n}" for n in range(1, len(ROW_COLUMNS) + 1))
    return (f"INSERT INTO predictions ({', '.join(_COLUMNS)}) SELECT {own}, {shared} FROM (VALUES {values}) "
            "WHERE true ON CONFLICT(id) DO NOTHING")  # WHERE: how SQLite parses an upsert from a SELECT


def _postgres(statement: str) -> str:
    return statement.replace("?", "%s")


def _connect_sqlite(path: Path, patience: float = 10.0) -> sqlite3.Connection:
    """Open, creating or migrating, the SQLite log. Two replicas opening a rollback-journal log at the
    same moment: one's switch to WAL can fail at once with "database is locked", busy timeout or not
    (1 run in 6 of tests/code/test_prediction_log_writer.py's two openers, since issue 17): such an
    open is tried again, for up to `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return _open_sqlite(path)
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _open_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    try:
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
        # Under continuous full load every checkpoint ends with newer frames in the WAL, so it never
        # restarts and grows (4.5 s of saturated batches: 117 MB); once it restarts, after a pause, this
        # writer cuts it back to 64 MiB instead of keeping the file at its largest (2 s of batches of
        # 2,000-character reviews: 511 MB)
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_KEPT_BYTES}")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_postgres(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, connect_timeout=3, options="-c statement_timeout=5000")  # the loop waits on it
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in _POSTGRES_TABLES:
            conn.execute(statement)
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        assert row is not None  # an aggregate gives one row
        version = row[0]
        if version is None or version < SCHEMA_VERSION:
            for step in range(version or 1, SCHEMA_VERSION):  # the tables above are schema 1
                for statement in _POSTGRES_MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            raise psycopg.DatabaseError(f"written by a newer service (schema {version}, this one knows "
                                        f"{SCHEMA_VERSION})")
    return conn
