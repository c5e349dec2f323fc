"""Every prediction the service answers is on record, whatever stops it, and a stuck disk is refused
loudly instead of growing memory: real service processes, real signals, 8 concurrent clients, counted
prediction by prediction."""
from __future__ import annotations

import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from review_sentiment.constants import DEFAULT_PREDICTION_LOG
from review_sentiment.data.reviews import load_texts
from tests.e2e.served import Load, Service
from tests.helpers import SAMPLE, Store, locked, wait_for

LOAD_SECONDS = 6


def logged_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db:  # as a crash left it: SQLite recovers the WAL on open
        return {row[0] for row in db.execute("SELECT id FROM predictions")}


def started(store: Store, *args: str) -> Service:
    service = Service.start(store.uri, store.path, *args)
    wait_for(lambda: service.client.get("/health").status_code == 200, 60, "a loaded model")
    return service


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_no_answered_prediction_is_lost_when_the_service_stops_under_load(own_store: Store,
                                                                          how: signal.Signals) -> None:
    service = started(own_store)
    load = Load(service.port, load_texts(SAMPLE, "Review text").dropna().tolist()).start()
    time.sleep(LOAD_SECONDS)  # the load's duration: the condition under test is "while clients are busy"
    code = service.stop(how)
    load.stop()
    answered = set(load.answered)
    lost = answered - logged_ids(own_store.path / DEFAULT_PREDICTION_LOG)
    print(f"{how.name}: {len(answered)} predictions answered 200 in {LOAD_SECONDS} s, {len(lost)} not on record")
    assert len(answered) > 1000, load.statuses
    assert not lost, f"{len(lost)} of {len(answered)} answered predictions are not in the log ({how.name})"
    if how == signal.SIGTERM:  # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert code in (0, -signal.SIGTERM), service.output
        assert "Traceback" not in service.output, service.output


def test_a_stuck_disk_fills_the_queue_then_503s_and_the_service_recovers(own_store: Store) -> None:
    """The log's file is locked by another process: two requests of 400 reviews fill the 1000-row queue
    and wait, then get 503 when their wait runs out, and four more are refused at once; /health says why.
    Once the lock goes, the writer writes what it held and the service is ready again."""
    service = started(own_store, "--log-queue-rows", "1000", "--log-wait-seconds", "2")
    log_path = own_store.path / DEFAULT_PREDICTION_LOG
    try:
        with locked(log_path), ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda n: service.client.post("/predict", json={"reviews": [f"fine {n}"] * 400}),
                                    range(6)))
            health = service.client.get("/health").json()
        assert [a.status_code for a in answers] == [503] * 6
        details = sorted(a.json()["detail"] for a in answers)
        assert [d.split(";")[0].split(")")[0] for d in details] == [
            "the prediction log has not written for 2 s"] * 2 + ["the prediction log is behind (800 rows are waiting "
                                                                 "to be written"] * 4, details
        assert all(a.headers["Retry-After"] == "1" for a in answers)
        assert health["status"] == "degraded" and "database is locked" in health["detail"], health
        assert (health["prediction_log"]["queued_rows"], health["prediction_log"]["rejected_requests"]) == (800, 4)

        wait_for(lambda: service.client.get("/health").json()["status"] == "ready", 15, "the log to catch up")
        after = service.client.post("/predict", json={"reviews": ["fine again"]})
        assert after.status_code == 200, after.text
        assert service.client.get("/health").json()["prediction_log"]["written_rows"] == 801
    finally:
        code = service.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in service.output, service.output
    waited = {f"fine {n}" for n, a in enumerate(answers) if "has not written" in a.json()["detail"]}
    with closing(sqlite3.connect(log_path)) as db:
        assert {row[0] for row in db.execute("SELECT review FROM predictions")} == waited | {"fine again"}


def test_requests_cancelled_at_shutdown_are_still_written_before_exit(own_store: Store) -> None:
    """SIGTERM while three requests wait on a locked disk: past the grace uvicorn cancels them (their
    clients get no answer), and the log, its writer unharmed by the cancelled waiters, writes their rows
    once the disk is back, before the process exits."""
    service = started(own_store, "--log-wait-seconds", "60", "--shutdown-seconds", "1")
    log_path = own_store.path / DEFAULT_PREDICTION_LOG
    with locked(log_path), ThreadPoolExecutor(3) as pool:
        waiting = [pool.submit(service.client.post, "/predict", json={"reviews": [f"cut {n}"]}) for n in range(3)]
        wait_for(lambda: service.client.get("/health").json()["prediction_log"]["queued_rows"] == 3, 15,
                 "three requests waiting on the disk")
        service.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Cancel 3 running task(s)" in service.output, 15, "the grace to run out")
        assert not any(request.done() and not request.exception() and request.result().status_code == 200
                       for request in waiting)
    code = service.process.wait(timeout=60)
    output = service.output
    assert code in (0, -signal.SIGTERM), output
    # uvicorn logs each task it cancels with a traceback; nothing else may fail
    assert output.count("Traceback") == output.count("CancelledError: Task cancelled, timeout graceful") == 3, output
    with closing(sqlite3.connect(log_path)) as db:
        assert {row[0] for row in db.execute("SELECT review FROM predictions")} == {"cut 0", "cut 1", "cut 2"}
