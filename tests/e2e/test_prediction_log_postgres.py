"""The monitor's reads of a PostgreSQL log that several replicas write at once: every row read by one
check exactly once, however the replicas' transactions commit, and across the log's migration to
schema 3 (the writing transaction's id on every row) while replicas of schema 2 keep writing."""
from __future__ import annotations

import asyncio
import collections
import multiprocessing
import random
import time
from datetime import UTC, datetime

import psycopg

from review_sentiment.monitoring.logged import Cursor, log_identity, read_new
from review_sentiment.orchestration.stack import StackState
from review_sentiment.serving.log_backends import open_backend
from review_sentiment.serving.prediction_log import LoggedRequest, PredictionLog, new_prediction_ids
from tests.e2e.conftest import new_database

# A log of schema 2, as the service before schema 3 made it (`row` alone orders rows).
SCHEMA_2 = [
    "CREATE TABLE predictions (row BIGSERIAL UNIQUE, id TEXT PRIMARY KEY, request_id TEXT NOT NULL,"
    " time TEXT NOT NULL, variant TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,"
    " caller_id TEXT, review TEXT NOT NULL, label INTEGER NOT NULL, score DOUBLE PRECISION NOT NULL,"
    " latency_ms DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE feedback (row BIGSERIAL UNIQUE, prediction_id TEXT PRIMARY KEY REFERENCES predictions(id),"
    " label INTEGER NOT NULL, time TEXT NOT NULL, giver TEXT, client TEXT)",
    "CREATE INDEX predictions_by_time ON predictions(time)",
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version VALUES (2)",
]


def replica(url: str, number: int, seconds: float) -> None:
    """A replica under load: 16 concurrent requests of 1–3 reviews, a label fed back for every 4th."""
    async def serve() -> None:
        log, deadline, answered = PredictionLog(url), time.monotonic() + seconds, []

        async def client(c: int) -> None:
            rng, n = random.Random(number * 100 + c), 0
            while time.monotonic() < deadline:
                ids = new_prediction_ids(rng.choice((1, 1, 2, 3)))
                await log.record(LoggedRequest(f"{number}.{c}.{n}", ids, datetime.now(UTC).isoformat(), "champion",
                                               "M", "1", None, [f"review {i}" for i in ids], [1] * len(ids),
                                               [0.9] * len(ids), 1.0))
                answered.extend(ids)
                n += 1
                if n % 4 == 0:
                    await log.feedback(rng.choice(answered), rng.randint(0, 1), datetime.now(UTC).isoformat())
                await asyncio.sleep(rng.random() * 0.004)
        await asyncio.gather(*(client(c) for c in range(16)))
        await log.close()
    asyncio.run(serve())


def replica_of_schema_2(url: str, seconds: float) -> None:
    """A replica of the service before schema 3, still running while a new one migrates the log: its
    statements (prepared, as psycopg does after 5 runs), one transaction per batch of 1–8 rows."""
    rng, deadline, n = random.Random(7), time.monotonic() + seconds, 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            with conn.transaction():
                ids = new_prediction_ids(rng.randint(1, 8))
                conn.cursor().executemany(
                    "INSERT INTO predictions (id, request_id, time, variant, model_name, model_version, caller_id,"
                    " review, label, score, latency_ms) VALUES (%s, %s, 't', 'champion', 'M', '1', NULL, 'r', 1, 0.9,"
                    " 1.0) ON CONFLICT(id) DO NOTHING", [(i, f"old.{n}") for i in ids])
                conn.execute("INSERT INTO feedback (prediction_id, label, time, giver, client) SELECT id, 1, 't',"
                             " 'anonymous', NULL FROM predictions WHERE id = %s ON CONFLICT(prediction_id) DO NOTHING",
                             (ids[0],))
            n += 1
            time.sleep(rng.random() * 0.003)


def schema(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]


class Monitor:
    """Reads as the checks do, each read starting where the last one stopped; counts each row read."""

    def __init__(self, url: str):
        self.url, self.cursor, self.reads = url, Cursor(), 0
        self.predictions, self.feedback = collections.Counter(), collections.Counter()
        self.late = 0  # rows read below a row an earlier read had: the rule of `max(row)` would have lost them

    def read(self) -> None:
        new = read_new(self.url, self.cursor)
        self.late += int((new.predictions["row"] < self.cursor.prediction_row).sum())
        self.predictions.update(int(r) for r in new.predictions["row"])
        self.feedback.update(int(r) for r in new.feedback["row"])
        self.cursor, self.reads = new.cursor, self.reads + 1

    def assert_every_row_read_once(self) -> None:
        with psycopg.connect(self.url) as conn:
            for table, read in (("predictions", self.predictions), ("feedback", self.feedback)):
                rows = [r for (r,) in conn.execute(f"SELECT row FROM {table}")]
                assert len(rows) > 100 and read.keys() == set(rows), (table, len(rows), len(set(rows) - read.keys()))
                assert set(read.values()) == {1}, (table, sum(n > 1 for n in read.values()))


def test_replicas_whose_transactions_commit_out_of_row_order_lose_no_row_to_the_checks(stack: StackState) -> None:
    url = new_database(stack, "out_of_order")
    open_backend(url, "out_of_order").close()
    monitor = Monitor(url)
    replicas = [multiprocessing.get_context("spawn").Process(target=replica, args=(url, n, 8)) for n in range(2)]
    for process in replicas:
        process.start()
    while any(process.is_alive() for process in replicas):
        monitor.read()
    assert [process.exitcode for process in replicas] == [0, 0]
    monitor.read()
    monitor.assert_every_row_read_once()
    assert monitor.late > 0, "no transaction committed out of row order: the test proved nothing"


def test_a_log_of_schema_2_is_read_once_across_its_migration_under_traffic(stack: StackState) -> None:
    url = new_database(stack, "migrated")
    with psycopg.connect(url) as conn:
        for statement in SCHEMA_2:
            conn.execute(statement)
    spawn = multiprocessing.get_context("spawn")
    replica_of_schema_2(url, 2)
    monitor = Monitor(url)
    monitor.read()  # rows of schema 2 (no xid) are read by `row`, as before
    assert monitor.cursor.xid == 0 and log_identity(url) is None and sum(monitor.predictions.values()) > 100
    old = spawn.Process(target=replica_of_schema_2, args=(url, 8))
    old.start()
    time.sleep(1)
    new = [spawn.Process(target=replica, args=(url, n, 5)) for n in (1, 2)]
    for process in new:  # they open the log: one migrates it to schema 3 while the old replica writes
        process.start()
    while schema(url) < 3:  # a check while the log is still of schema 2 is the old rule's, race and all
        time.sleep(0.01)
    while any(process.is_alive() for process in [old, *new]):
        monitor.read()
    assert [process.exitcode for process in [old, *new]] == [0, 0, 0]
    monitor.read()
    monitor.assert_every_row_read_once()
    assert monitor.cursor.xid > 0 and log_identity(url) is not None
    with psycopg.connect(url) as conn:  # rows without an xid: all before the migration, all below the others
        last_without, first_with, old_with = conn.execute(
            "SELECT max(row) FILTER (WHERE xid IS NULL), min(row) FILTER (WHERE xid IS NOT NULL),"
            " count(*) FILTER (WHERE xid IS NOT NULL AND request_id LIKE 'old.%') FROM predictions").fetchone()
    assert last_without < first_with and old_with > 0  # the schema-2 replica's rows since: an xid, its default
    assert read_new(url, Cursor(monitor.cursor.prediction_row, monitor.cursor.feedback_row)).predictions.empty, \
        "a cursor without an xid (a check from before schema 3) read the rows past its `row` again"
