"""The prediction log's writer under the failures a service meets: a waiter that went away, a row the
database refuses, a database locked by another process, a log written by the first service's schema."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Callable, Coroutine
from contextlib import closing
from pathlib import Path

import pytest

from review_sentiment.constants import CHAMPION
from review_sentiment.monitoring.logged import log_identity, read_log
from review_sentiment.serving.log_backends import SCHEMA_VERSION, LogDatabaseError, open_backend
from review_sentiment.serving.prediction_log import LogFull, LogStuck, PredictionLog
from tests.code.test_prediction_log import answered
from tests.helpers import locked

# The tables of the first service's log (schema 0: no version, positional INSERT), as it wrote them.
SCHEMA_0 = """
CREATE TABLE predictions (
    id TEXT PRIMARY KEY, request_id TEXT NOT NULL, time TEXT NOT NULL, variant TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, caller_id TEXT,
    review TEXT NOT NULL, label INTEGER NOT NULL, score REAL NOT NULL, latency_ms REAL NOT NULL
);
CREATE TABLE feedback (
    prediction_id TEXT PRIMARY KEY REFERENCES predictions(id), label INTEGER NOT NULL, time TEXT NOT NULL
);
INSERT INTO predictions VALUES ('old.0', 'old', '2026-11-01T00:00:00.000+00:00', 'champion',
    'FlipkartSentimentModel', '1', NULL, 'worked for a year', 1, 0.8, 3.0);
INSERT INTO feedback VALUES ('old.0', 1, '2026-11-02T00:00:00.000+00:00');
"""


def on_an_event_loop(test: Callable[..., Coroutine]) -> Callable[..., None]:
    """Run an async test on a fresh event loop, as the service's log runs on the service's loop."""
    @functools.wraps(test)
    def run(*args, **kwargs) -> None:
        asyncio.run(test(*args, **kwargs))
    return run


def logged_ids(path: Path) -> list[str]:
    return sorted(read_log(path)["id"])


async def until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Let the event loop run (the log writes on it) until `condition` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.01)


def retrying(log: PredictionLog) -> bool:
    return "database is locked" in log.state.state


@on_an_event_loop
async def test_a_waiter_that_went_away_does_not_stop_the_writer(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db")
    with locked(log.target):
        gone = log.record(answered("gone", CHAMPION, "1", [1], 1.0))
        await until(lambda: retrying(log), "the writer to meet the lock")
        gone.cancel()  # its client disconnected, or its wait timed out, while the row waited for the disk
    assert await asyncio.wait_for(log.record(answered("next", CHAMPION, "1", [0], 1.0)), 10) is None
    await log.close()
    assert logged_ids(log.target) == ["gone.0", "next.0"]  # a cancelled answer is still on record
    assert log.state.report()["failed_rows"] == 0


@on_an_event_loop
async def test_a_row_the_database_refuses_loses_only_itself(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db")
    with locked(log.target):  # queue all three so that they are committed as one batch
        futures = [log.record(answered(name, CHAMPION, "1", [1], 1.0, reviews))
                   for name, reviews in (("ok1", None), ("bad", ["half an emoji \ud83d"]), ("ok2", None))]
        await until(lambda: retrying(log), "the writer to meet the lock")
    outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
    assert outcomes[0] is None and outcomes[2] is None and isinstance(outcomes[1], UnicodeEncodeError)
    assert await log.record(answered("after", CHAMPION, "1", [1], 1.0)) is None
    state = log.state.report()
    await log.close()
    assert logged_ids(log.target) == ["after.0", "ok1.0", "ok2.0"]
    assert (state["state"], state["failed_rows"], state["written_rows"], state["queued_rows"]) == ("writing", 1, 3, 0)
    assert "surrogate" in state["last_error"]


@on_an_event_loop
async def test_a_full_queue_refuses_at_once_and_every_accepted_row_is_written(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db", max_queued_rows=5)
    with locked(log.target):
        accepted = [log.record(answered(f"r{n}", CHAMPION, "1", [1], 1.0)) for n in range(5)]
        with pytest.raises(LogFull, match="5 rows are waiting to be written"):
            log.record(answered("over", CHAMPION, "1", [1], 1.0))
        with pytest.raises(LogFull):  # feedback is held to the same bound
            log.feedback("r0.0", 1, "t")
        await until(lambda: retrying(log), "the writer to report the lock")
        await asyncio.sleep(0.2)  # several retries against the lock
        assert not any(f.done() for f in accepted)  # nobody is answered before the rows are on record
    assert await asyncio.wait_for(asyncio.gather(*accepted), 10) == [None] * 5
    state = log.state.report()
    await log.close()
    assert logged_ids(log.target) == [f"r{n}.0" for n in range(5)]
    assert (state["state"], state["rejected_requests"], state["queued_rows"]) == ("writing", 2, 0)


@on_an_event_loop
async def test_a_stuck_disk_releases_its_waiters_and_keeps_their_rows(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db", wait_seconds=0.3)
    with locked(log.target):
        waiting = log.record(answered("stuck", CHAMPION, "1", [1], 1.0))
        with pytest.raises(LogStuck, match="not written for 0.3 s"):
            await asyncio.wait_for(waiting, 5)
        assert log.state.queued_rows == 1
    await until(lambda: log.state.queued_rows == 0, "the row to be written once the lock is gone")
    await log.close()
    assert logged_ids(log.target) == ["stuck.0"]


@on_an_event_loop
async def test_close_gives_up_on_a_disk_that_stays_locked_and_says_how_much(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    log = PredictionLog(tmp_path / "p.db")
    with locked(log.target):
        log.record(answered("r", CHAMPION, "1", [1, 0, 1], 1.0))
        await log.close(timeout=0.3)
    assert log.state.report()["state"] == "stopped"
    assert "still failing after 0 s at shutdown (database is locked); 3 rows not written" in caplog.text


@on_an_event_loop
async def test_close_writes_everything_still_queued(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.db")
    with locked(log.target):
        for n in range(300):
            log.record(answered(f"r{n}", CHAMPION, "1", [1, 0], 1.0))
        await until(lambda: retrying(log), "the writer to meet the lock")
    await log.close()
    assert len(logged_ids(log.target)) == 600
    assert log.state.report()["state"] == "stopped"
    assert (log.target.parent / f"{log.target.name}-wal").stat().st_size == 0  # all checkpointed into the file


@on_an_event_loop
async def test_a_log_of_the_first_schema_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_0)
    log = PredictionLog(path)
    await log.record(answered("new", CHAMPION, "2", [0], 1.0))
    await log.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert "predictions_by_time" not in indexes  # made by the first migration, dropped by the fourth
    frame = read_log(path).set_index("id")
    assert frame.loc["old.0", "review"] == "worked for a year" and frame.loc["old.0", "true_label"] == 1
    assert frame.loc["new.0", "model_version"] == "2"
    assert log_identity(path) is not None and log_identity(os.path.relpath(path)) == log_identity(path)


def test_a_log_from_a_newer_service_is_refused_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LogDatabaseError, match=f"newer service .schema {SCHEMA_VERSION + 1}"):
        open_backend(path, str(path))


def _open_log(path: str, go) -> None:
    go.wait(timeout=30)
    open_backend(path, path).close()


def test_replicas_opening_an_old_log_together_migrate_it_once(tmp_path: Path) -> None:
    """Schema 1 → 3 adds who gave each label and the log's identity; two processes opening a schema-1 log
    at the same moment must both open it (the migration runs once, in one transaction), round after round."""
    context = multiprocessing.get_context("fork")  # each opener: a fresh connection in a process of its own
    for round_ in range(6):
        path = tmp_path / f"p{round_}.db"
        with closing(sqlite3.connect(path)) as db:
            db.executescript(SCHEMA_0 + "PRAGMA user_version = 1;")
        go = context.Event()
        openers = [context.Process(target=_open_log, args=(str(path), go)) for _ in range(2)]
        for opener in openers:
            opener.start()
        go.set()
        for opener in openers:
            opener.join(timeout=60)
        assert [o.exitcode for o in openers] == [0, 0], round_
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
            assert {"giver", "client"} <= {row[1] for row in db.execute("PRAGMA table_info(feedback)")}
            assert db.execute("SELECT count(*) FROM log_identity").fetchone()[0] == 1  # made once
    assert read_log(path).loc[0, "giver"] is None  # a label from before givers were recorded: unknown


@on_an_event_loop
async def test_every_row_of_requests_of_any_size_is_written_with_its_own_values(tmp_path: Path) -> None:
    """Rows go in chunks (512, 256, ..., 1) with the request's shared values bound once: each row must
    still get its own review, label, score and probability, and its request's values, in SQLite and read back."""
    sizes = [1, 2, 3, 100, 513, 1000]
    requests = [dataclasses.replace(answered(f"r{size}", CHAMPION, str(size), [i % 2 for i in range(size)], size / 7,
                                             [f"review {size}/{i} ✓" for i in range(size)]),
                                    caller_id=f"caller {size}", probabilities=[i / size for i in range(size)],
                                    scores=[1 - i / size for i in range(size)])
                for size in sizes]
    log = PredictionLog(tmp_path / "p.db")
    for request in requests:
        await log.record(request)
    await log.close()
    frame = read_log(tmp_path / "p.db").set_index("id")
    assert len(frame) == sum(sizes)
    for request in requests:
        for pid, review, label, score, probability in request.rows():
            row = frame.loc[pid]
            assert (row["review"], row["label"], row["score"], row["probability"]) == (
                review, label, score, probability)
            assert (row["request_id"], row["model_version"], row["caller_id"], row["latency_ms"]) == (
                request.request_id, request.model_version, request.caller_id, request.latency_ms)


@on_an_event_loop
async def test_a_wal_grown_under_load_is_cut_back_once_a_checkpoint_catches_up(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Under continuous writes the WAL never restarts (each checkpoint ends with newer frames in it) and
    grows; once a checkpoint has caught up, the next commit restarts it and cuts the file to the limit."""
    monkeypatch.setattr("review_sentiment.serving.log_backends._WAL_KEPT_BYTES", 256 * 1024)
    path, wal = tmp_path / "p.db", tmp_path / "p.db-wal"
    log = PredictionLog(path)
    for n in range(30):
        reviews = [f"review {n}.{i} " * 20 for i in range(100)]
        await log.record(answered(f"r{n}", CHAMPION, "1", [1] * 100, 1.0, reviews))
    grown = wal.stat().st_size
    assert grown > 2**20

    def caught_up() -> bool:
        with closing(sqlite3.connect(path)) as db:
            _, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames == copied

    await until(caught_up, "a checkpoint that copied every frame")
    await log.record(answered("after", CHAMPION, "1", [1], 1.0))
    assert wal.stat().st_size <= 256 * 1024 < grown
    await log.close()
    assert len(read_log(path)) == 30 * 100 + 1


@on_an_event_loop
async def test_an_sqlite_allowing_999_values_a_statement_still_takes_a_request_of_1000_rows(tmp_path: Path) -> None:
    """SQLite before 3.32 binds at most 999 values a statement (a 512-row chunk binds 2,567)."""
    log = PredictionLog(tmp_path / "p.db")
    log._db._conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # type: ignore[attr-defined]  # an old build
    await log.record(answered("big", CHAMPION, "1", [1] * 1000, 1.0))
    await log.close()
    assert len(read_log(tmp_path / "p.db")) == 1000
