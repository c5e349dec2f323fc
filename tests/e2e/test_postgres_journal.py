"""Optuna's journal in PostgreSQL, where the stack keeps its studies: the claim tests of
tests/code/test_trial_queue.py on it, a writer killed with SIGKILL mid-append, and a database of an
earlier release kept on Optuna's RDBStorage."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import optuna
import psycopg
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from review_sentiment.databases import sqlalchemy_url
from review_sentiment.orchestration.stack import StackState
from review_sentiment.training.journal import HeartbeatJournal, JournalLost
from review_sentiment.training.postgres_journal import APPLICATION, TABLE, PostgresJournal
from review_sentiment.training.study import open_storage
from tests.code.test_trial_queue import (
    CLAIM_WRITES,
    killed_after_a_write_of_a_claim,
    race_for_a_budget,
    stale_past_the_grace_only,
)
from tests.e2e.conftest import new_database
from tests.helpers import wait_for

# appends the next log as `PostgresJournal.append_logs` does, but in a transaction it leaves open (until SIGKILL)
HOLDER = f"""
import sys, time, psycopg
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("INSERT INTO {TABLE} (log_number, log) SELECT max(log_number) + 1, '{{}}' FROM {TABLE}")
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def database(stack: StackState) -> str:
    return new_database(stack, "journal")


def logs_in(database: str) -> list[tuple[int, str]]:
    with psycopg.connect(database) as conn:
        return conn.execute(f"SELECT log_number, log FROM {TABLE} ORDER BY log_number").fetchall()


def test_workers_racing_for_a_lazily_queued_budget_run_exactly_the_budget(database: str) -> None:
    race_for_a_budget(database)
    numbers = [number for number, _ in logs_in(database)]
    assert numbers == list(range(len(numbers))) and len(numbers) > 20  # three writers, no gap, none twice


@pytest.mark.parametrize(("write", "left"), CLAIM_WRITES)
def test_a_worker_killed_after_any_write_of_a_claim_leaves_no_trial_the_study_waits_for_forever(
        write: str, left: TrialState, database: str) -> None:
    killed_after_a_write_of_a_claim(database, write, left)


def test_a_running_trial_is_stale_past_its_grace_only(database: str) -> None:
    """As on a journal file, with beats read off the server's clock (here the same machine's)."""
    stale_past_the_grace_only(database)


def test_a_writer_killed_mid_append_loses_only_its_own_log_and_stalls_no_one(database: str) -> None:
    journal = PostgresJournal.open(database)
    assert journal is not None
    journal.append_logs([{"op_code": 0}])
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, database], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        appending = threading.Thread(target=journal.append_logs, args=([{"op_code": 1}, {"op_code": 2}],))
        appending.start()
        with psycopg.connect(database) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT "
                                          "granted").fetchone() == (1,), 30,
                     "the append to wait for the log numbered 1")
        assert appending.is_alive()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # mid-transaction: the server rolls its log back, and the append goes on
        holder.wait()  # (a failed test leaves no transaction holding the shared stack's database for 10 minutes)
    appending.join(30)
    assert not appending.is_alive()
    assert logs_in(database) == [(0, '{"op_code": 0}'), (1, '{"op_code": 1}'), (2, '{"op_code": 2}')]
    assert journal.read_logs(1) == [{"op_code": 1}, {"op_code": 2}]


def test_a_database_holding_studies_of_an_earlier_release_stays_on_rdbstorage(database: str,
                                                                               stack: StackState) -> None:
    optuna.create_study(storage=RDBStorage(sqlalchemy_url(database)), study_name="before the journal")
    earlier = open_storage(database)
    assert isinstance(earlier, RDBStorage)  # a run killed before the upgrade resumes from its trials
    assert optuna.load_study(study_name="before the journal", storage=earlier).trials == []
    fresh = open_storage(new_database(stack, "fresh"))
    assert isinstance(fresh, HeartbeatJournal) and isinstance(fresh.backend, PostgresJournal)
    empty = new_database(stack, "empty")
    RDBStorage(sqlalchemy_url(empty))  # its tables, no study (as a dashboard opened first makes them)
    assert isinstance(open_storage(empty), HeartbeatJournal)


def drop_the_journals_connections(database: str) -> None:
    """As a server restart does (`pg_ctl restart`)."""
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.execute("SELECT bool_and(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                            "WHERE application_name = %s", (APPLICATION,)).fetchone() == (True,)


def test_the_first_write_and_read_after_the_server_dropped_the_connection_go_through(database: str) -> None:
    journal = PostgresJournal.open(database)
    assert journal is not None
    journal.append_logs([{"op_code": 0}])
    drop_the_journals_connections(database)
    journal.append_logs([{"op_code": 1}])  # not committed before the drop: appended again, once
    assert journal.read_logs(1) == [{"op_code": 1}]
    drop_the_journals_connections(database)
    assert journal.read_logs(0) == [{"op_code": 0}, {"op_code": 1}]
    assert logs_in(database) == [(0, '{"op_code": 0}'), (1, '{"op_code": 1}')]


def test_a_worker_that_read_logs_the_server_lost_stops_and_one_that_read_none_goes_on(database: str) -> None:
    """A server that went down before writing its last logs to disk (they are committed without waiting
    for it) comes back without them: it drops every connection, and each worker finds out on its next."""
    behind, ahead = PostgresJournal.open(database), PostgresJournal.open(database)
    assert behind is not None and ahead is not None
    ahead.append_logs([{"op_code": 0}])
    assert behind.read_logs(0) == [{"op_code": 0}]
    ahead.append_logs([{"op_code": 1}])  # read back by `ahead` only
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"DELETE FROM {TABLE} WHERE log_number >= 1")  # as the server lost log 1
    drop_the_journals_connections(database)
    with pytest.raises(JournalLost, match="lost log 1 and any after it"):
        ahead.read_logs(2)
    assert behind.read_logs(1) == []  # its reads are still true: it goes on, on a new connection
    behind.append_logs([{"op_code": 2}])
    assert logs_in(database) == [(0, '{"op_code": 0}'), (1, '{"op_code": 2}')]
