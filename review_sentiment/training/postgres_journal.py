"""Optuna's journal in a PostgreSQL table, for the studies of workers on several machines (the stack's
`OPTUNA_STORAGE`): `journal.HeartbeatJournal` on this backend keeps heartbeats on the server's clock.
Optuna 5.1 ships journal backends for a file and for Redis only; this one mirrors the contract of
`optuna.storages.journal.BaseJournalBackend` (logs read from a number on, in order, without gaps).
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any

import psycopg
import sqlalchemy
from optuna.storages.journal import BaseJournalBackend

from review_sentiment.databases import libpq_url, sqlalchemy_url
from review_sentiment.training.journal import JournalLost

DROPS = 3  # an append's dropped connections before its error is raised
APPLICATION = "optuna journal"  # the journal's connections, as pg_stat_activity names them
TABLE = "optuna_journal"  # PostgreSQL: one row per log, numbered from 0 in the order they were appended
SCHEMA_LOCK = 0x5E48  # PostgreSQL's advisory lock key under which the journal's table is made
_SERVER_CLOCK = "SELECT extract(epoch FROM clock_timestamp())"  # seconds since the epoch, as `time.time()`
_READ = f"SELECT log FROM {TABLE} WHERE log_number >= %s ORDER BY log_number"
_APPEND = (  # numbered after the last committed log; returns what a read from %s would, these logs included
    f"WITH appended AS (INSERT INTO {TABLE} (log_number, log) SELECT (SELECT coalesce(max(log_number), -1) FROM "
    f"{TABLE}) + number, log FROM unnest(%s::text[]) WITH ORDINALITY AS new(log, number) RETURNING log_number, log) "
    f"SELECT log FROM (SELECT log_number, log FROM {TABLE} WHERE log_number >= %s UNION ALL "
    "SELECT log_number, log FROM appended) AS logs ORDER BY log_number")


class PostgresJournal(BaseJournalBackend):
    """The journal as rows of one table, a log's number its row's key. An append numbers its logs after the
    last committed one, in one autocommitted statement: two appends that pick the same number collide on
    the key, and the later one numbers again. So a number is taken only once the one before it is committed,
    and a reader sees the logs without gaps (Optuna replays logs by counting them). A worker killed
    mid-append leaves nothing (its statement rolls back); no lock to leave behind, no torn line.

    Each call is one round trip on this process's own connection (a forked process makes its own), where
    SQLAlchemy's pool adds its ping, and a transaction its BEGIN and COMMIT. A write of Optuna's is an append
    and then a read: one round trip here, the append's statement reading ahead.

    Appends commit without waiting for the disk (`synchronous_commit=off`): waiting was ~15 of ~28 ms of
    storage per trial (benchmarks/bench_workers.py). A worker killed costs nothing this way (the server
    writes what it committed); a server that goes down (crash, power, `pg_ctl stop -m immediate`) can lose
    its last ~0.6 s of logs, always the latest ones. A worker that had read any of them would replay a study
    the database no longer holds: on its next connection it finds its last read log gone and stops
    (`JournalLost`); the command run again resumes from what the server kept, queueing lost trials again."""

    def __init__(self, url: str, engine: sqlalchemy.Engine) -> None:
        self.engine = engine  # for the claims' transactions (`trial_queue._claiming`)
        self._url = libpq_url(url)
        self._connection: psycopg.Connection | None = None
        self._pid = os.getpid()
        self._read_next = 0  # where the next read starts: where the last one ended
        self._last: tuple[int, str] | None = None  # the last log read: its number and text
        self._connecting = threading.Lock()  # the heartbeat's thread and the trial's may both find it dropped
        self._read_ahead: tuple[int, list[dict[str, Any]]] | None = None  # read by the last append, and from where

    @classmethod
    def open(cls, url: str) -> PostgresJournal | None:
        """The journal in the database `url` names, its table made if need be; None if the database holds
        studies of an earlier release in Optuna's RDBStorage tables (and no journal): they stay there, so
        that a run killed before the upgrade resumes."""
        engine = sqlalchemy.create_engine(sqlalchemy_url(url), pool_pre_ping=True)
        with engine.begin() as connection:  # under the lock: two workers opening a new database at once
            connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": SCHEMA_LOCK})
            if connection.execute(sqlalchemy.text(  # tables an empty RDBStorage made (a dashboard, say) do not count
                    f"SELECT to_regclass('{TABLE}') IS NULL AND to_regclass('studies') IS NOT NULL")).scalar() \
                    and connection.execute(sqlalchemy.text("SELECT EXISTS (SELECT 1 FROM studies)")).scalar():
                engine.dispose()
                return None
            connection.execute(sqlalchemy.text(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (log_number bigint PRIMARY KEY, log text NOT NULL)"))
        return cls(url, engine)

    def read_logs(self, log_number_from: int) -> list[dict[str, Any]]:
        ahead, self._read_ahead = self._read_ahead, None
        if ahead is not None and ahead[0] == log_number_from:
            return ahead[1]
        return self._read(log_number_from, self._query(_READ, log_number_from))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Appends, and reads in the same statement what the journal's next read will ask for (Optuna reads
        after each write): the logs from where the last read ended, these included."""
        encoded, drops = [json.dumps(entry) for entry in logs], 0
        while True:
            connection = self._connected()
            try:
                rows = connection.execute(_APPEND, (encoded, self._read_next), prepare=True).fetchall()
            except psycopg.errors.UniqueViolation:
                continue  # another process appended first: these logs are numbered after its
            except psycopg.OperationalError:
                if not connection.closed or (drops := drops + 1) > DROPS:
                    raise
                # dropped (say, the server restarted), committed or not: appended again unless found
                # (logs not yet read are other processes', or these: each names this process's worker id)
                rows = self._query(_READ, self._read_next)
                if (encoded[0],) not in rows:
                    continue
            self._read_ahead = (self._read_next, self._read(self._read_next, rows))
            return

    def now(self) -> float:
        """The server's clock, which workers on every machine share."""
        [(now,)] = self._query(_SERVER_CLOCK)
        return float(now)

    def _query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """A read, tried once more on a new connection if the server dropped this one (say, it restarted).
        Not an append: it may have been committed before the connection dropped."""
        connection = self._connected()
        try:
            return connection.execute(sql, params, prepare=True).fetchall()
        except psycopg.OperationalError:
            if not connection.closed:
                raise
            return self._connected().execute(sql, params, prepare=True).fetchall()

    def _connected(self) -> psycopg.Connection:
        """This process's connection (its threads take turns on it), made again once broken or after a
        fork: the parent's stays the parent's. A new connection first checks that the last log this
        process read is still there: it is lost if the server went down before it reached the disk."""
        with self._connecting:
            if self._connection is None or self._connection.closed or self._pid != os.getpid():
                self._connection, self._pid = self._connect(), os.getpid()
            return self._connection

    def _connect(self) -> psycopg.Connection:
        connection = psycopg.connect(self._url, autocommit=True, application_name=APPLICATION)
        connection.execute("SET synchronous_commit = off")  # a SET, not `options`: those of the URL and PGOPTIONS stay
        if self._last is not None and connection.execute(
                f"SELECT log FROM {TABLE} WHERE log_number = %s", (self._last[0],)).fetchone() != (self._last[1],):
            connection.close()
            raise JournalLost(f"the Optuna journal in PostgreSQL lost log {self._last[0]} and any after it, "
                              "which this worker had read: its server went down before writing them to disk. "
                              "Run the command again: it resumes from the logs the server kept")
        return connection

    def _read(self, number_from: int, rows: list[tuple[str]]) -> list[dict[str, Any]]:
        """Logs from the rows read from `number_from` on; where the next read starts, and the last log read."""
        self._read_next = number_from + len(rows)
        if rows:
            self._last = (self._read_next - 1, rows[-1][0])
        return [json.loads(log) for log, in rows]
