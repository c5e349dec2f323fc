"""What the stages share about processes: which process is which across a stepped clock, the collector
paused while a process imports its libraries, Ctrl-C held while a failed run takes back what it wrote, and
a command's own folder of temporary files, and lines its forked workers print reaching the pipe whole."""
from __future__ import annotations

import gc
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import psutil
import pytest
import sqlalchemy
from optuna.storages import RDBStorage

from review_sentiment.constants import FAMILY_NAMES, PROJECT_DIR
from review_sentiment.databases import sqlite_without_fsync_per_commit
from review_sentiment.processes import (
    collector_paused,
    ended,
    interrupts_held,
    own_temporary_folder,
    quiet_cursors_cut_by_ctrl_c,
    running,
    start_mark,
)
from review_sentiment.tracking.undo import undone_on_failure
from review_sentiment.training.attempt import Attempt
from review_sentiment.training.family_studies import FamilyStudy
from review_sentiment.training.study import Storage, open_storage
from tests.helpers import Store, locked, wait_for


@pytest.fixture
def child() -> Iterator[psutil.Process]:
    """A real process of its own, for a record to name."""
    process = psutil.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_process_is_still_known_by_its_start_mark_once_the_wall_clock_is_stepped(
        child: psutil.Process, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault probe shifted a recorded start by 2 s, as a stepped clock does to psutil's start time (the
    boot time it adds moves with the clock): `stack.py down` then forgot both servers, left running. The
    clock itself is not stepped here (it is the whole machine's): the boot time psutil reads is, by 5 s."""
    recorded, before = start_mark(child), child.create_time()
    real = psutil._psplatform.boot_time  # type: ignore[attr-defined]
    monkeypatch.setattr(psutil._psplatform, "boot_time", lambda: real() + 5)  # what /proc/stat says after a step
    assert abs(psutil.Process(child.pid).create_time() - before - 5) < 0.01  # the step moved psutil's start time
    assert running(child.pid, recorded) is not None
    assert start_mark(child) == recorded  # marked again through an object that read its start before the step
    assert running(child.pid, before) is None  # a start since the epoch (a mark made before) no longer matches


def test_a_start_mark_of_another_boot_or_start_is_not_the_process_and_one_made_before_still_is(
        child: psutil.Process) -> None:
    """After a reboot the count since boot starts again: the boot's id tells a pid that runs again at the
    same second apart. A record made before start marks (a start since the epoch, as a number in
    stack.json or text in a tag) still names the process."""
    seconds, _, boot = start_mark(child).partition("@")
    assert boot  # Linux names its boot
    assert running(child.pid, f"{seconds}@{boot}") is not None
    assert running(child.pid, f"{seconds}@another-boot") is None
    assert running(child.pid, f"{float(seconds) + 2:.3f}@{boot}") is None
    assert running(child.pid, child.create_time()) is not None
    assert running(child.pid, f"{child.create_time():.3f}") is not None


def _tracked(thing: object) -> bool:
    """Whether the collector still looks at `thing` (a frozen object is in none of its generations)."""
    return any(tracked is thing for tracked in gc.get_objects())


def test_in_a_program_of_ours_what_a_paused_block_made_is_left_out_of_later_collections(
        monkeypatch: pytest.MonkeyPatch) -> None:
    program = types.ModuleType("__main__")
    program.__file__ = str(PROJECT_DIR / "sentiment_mlflow_optuna.py")
    monkeypatch.setitem(sys.modules, "__main__", program)
    try:
        with collector_paused():
            assert not gc.isenabled()
            made = [[index] for index in range(10)]
        assert gc.isenabled()
        assert not _tracked(made)
    finally:
        gc.unfreeze()  # this test process is pytest's: its objects go back to the collector


def test_called_in_from_a_program_not_ours_a_paused_block_only_pauses() -> None:
    """A notebook or the tests calling a script's `main`: nothing of theirs is frozen for good."""
    with collector_paused():
        assert not gc.isenabled()
        made = [[index] for index in range(10)]
    assert gc.isenabled()
    assert _tracked(made)


def test_the_collector_is_left_as_it_was_when_the_block_fails() -> None:
    gc.disable()
    try:
        with pytest.raises(KeyError), collector_paused():
            raise KeyError("a failed import")
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_ctrl_c_while_a_failed_run_takes_back_what_it_wrote_does_not_cut_it_short(
        store: Store, capfd: pytest.CaptureFixture[str]) -> None:
    """A second Ctrl-C during the take-back left runs active beside deleted ones (a fault probe: 3 of 4
    double Ctrl-Cs 0.05-0.1 s apart). Here it lands once the first of 30 runs is deleted: all are."""
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("taken back")
    runs = [client.create_run(experiment_id).info.run_id for _ in range(30)]

    def interrupt_once_taking_back() -> None:
        wait_for(lambda: client.get_run(runs[0]).info.lifecycle_stage == "deleted", 60, "the take-back", 0.005)
        os.kill(os.getpid(), signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_once_taking_back)
    with pytest.raises(RuntimeError, match="the run failed"), undone_on_failure() as writes:
        writes.runs.extend(runs)
        interrupter.start()
        raise RuntimeError("the run failed")
    interrupter.join()
    assert {client.get_run(run).info.lifecycle_stage for run in runs} == {"deleted"}
    assert "taking back what the failed run wrote: Ctrl-C waits until that is done" in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is Ctrl-C again


@pytest.mark.e2e  # another process, importing MLflow, commits in the middle (~2.4 s)
def test_a_take_back_after_a_ctrl_c_cut_a_read_of_the_store_short_still_takes_back(store: Store) -> None:
    """CI found runs left active: Ctrl-C landed between a query's execution and the fetch of its rows, so
    a pooled connection kept its read of the store open; after the publisher committed, the take-back's
    write on it failed at once ("database is locked": SQLite cannot move a read begun before another
    process's commit on to a write; Python's rollback as the pool takes it back does not end that read).
    Here every connection of the pool is left in that state, another process commits, the run fails."""
    connections: list[sqlite3.Connection] = []

    def remember(connection: sqlite3.Connection, *_: object) -> None:
        connections.append(connection)

    sqlalchemy.event.listen(sqlalchemy.pool.Pool, "checkout", remember)
    try:
        with sqlite_without_fsync_per_commit(store.uri):  # the store written ahead, as a tuning run writes it
            client = mlflow.MlflowClient()
            experiment_id = client.create_experiment("taken back")
            run = client.create_run(experiment_id).info.run_id
            for key in "abc":
                client.set_tag(run, key, "tagged")
            client.get_run(run)
            unfinished = [connection.execute("SELECT key FROM tags")  # each back in the pool, its read open
                          for connection in {id(c): c for c in connections}.values()]
            assert all(read.fetchone() is not None for read in unfinished)
            subprocess.run([sys.executable, "-c", f"import mlflow; mlflow.MlflowClient({store.uri!r}).create_run("
                            f"{experiment_id!r})"], check=True, capture_output=True)
            with pytest.raises(RuntimeError, match="the run failed"), undone_on_failure() as writes:
                writes.runs.append(run)
                raise RuntimeError("the run failed")
    finally:
        sqlalchemy.event.remove(sqlalchemy.pool.Pool, "checkout", remember)
    assert client.get_run(run).info.lifecycle_stage == "deleted"


def failed_attempt(storage: Storage, run: str, studies: list[optuna.Study]) -> None:
    """An attempt holding `studies` (one a family) that wrote `run` fails."""
    attempt = Attempt(storage, "m", unlocked_promotion=False)
    with pytest.raises(RuntimeError, match="the run failed"), attempt:
        attempt.taken += [FamilyStudy(family, study, run, resumed=False)
                          for family, study in zip(FAMILY_NAMES, studies, strict=False)]
        attempt.writes.runs.append(run)
        raise RuntimeError("the run failed")


@pytest.mark.e2e  # another process, importing Optuna, commits in the middle (~1.3 s)
def test_a_take_back_after_a_ctrl_c_cut_a_read_of_optunas_sqlite_storage_short_deletes_the_studies(
        store: Store, tmp_path: Path) -> None:
    """The same cut read on Optuna's SQLite storage (`--storage sqlite:///...`), a worker committing a trial
    meanwhile: the take-back's study deletion failed ("database is locked"), and that failure skipped
    taking back the runs too. Both are taken back."""
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert isinstance(storage, RDBStorage)
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("taken back")).info.run_id
    ours = optuna.create_study(storage=storage, study_name="ours")
    other = optuna.create_study(storage=storage, study_name="another command's")
    ours.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)
    unfinished = []
    with storage.engine.connect() as first, storage.engine.connect() as second:  # the pool's two connections
        for connection in (first, second):
            unfinished.append(read := connection.connection.driver_connection.execute(  # type: ignore[union-attr]
                "SELECT trial_id FROM trials"))
            assert read.fetchone() is not None
    subprocess.run([sys.executable, "-c", "import optuna; optuna.load_study(study_name=\"another command's\", "
                    f"storage={str(storage.url)!r}).enqueue_trial({{}})"], check=True, capture_output=True)
    failed_attempt(storage, run, [ours])
    assert optuna.get_all_study_names(storage) == [other.study_name]
    assert client.get_run(run).info.lifecycle_stage == "deleted"


def test_a_failed_run_whose_studies_cannot_be_deleted_leaves_its_runs_too(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Another process holds the storage's lock past its timeout: the study stays, so its run stays too (a
    rerun resumes both, as after a kill); taken back alone, the run left a study that resumed into a deleted
    run (a review found it)."""
    database = tmp_path / "optuna.db"
    storage = RDBStorage(f"sqlite:///{database}", engine_kwargs={"connect_args": {"timeout": 0.2}})
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("left")).info.run_id
    ours = optuna.create_study(storage=storage, study_name="ours")
    with locked(database):
        failed_attempt(storage, run, [ours])
    assert optuna.get_all_study_names(storage) == ["ours"]
    assert client.get_run(run).info.lifecycle_stage == "active"
    assert "Could not delete the failed run's studies (ours: " in caplog.text
    assert "running the command again resumes it" in caplog.text


def test_a_failed_run_that_could_delete_only_some_of_its_studies_takes_back_its_runs(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only a whole set of studies is resumed, so with one of two kept (here: gone already, deleted by
    another process) the rerun starts afresh: the runs are taken back, not left as a kill leaves them
    (a review found them left)."""
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("taken back")).info.run_id
    studies = [optuna.create_study(storage=storage, study_name=name) for name in ("ours", "gone")]
    optuna.delete_study(study_name="gone", storage=storage)
    failed_attempt(storage, run, studies)
    assert optuna.get_all_study_names(storage) == []
    assert client.get_run(run).info.lifecycle_stage == "deleted"
    assert "Could not delete some of the failed run's studies (gone: " in caplog.text


def test_pinned_a_cursor_a_ctrl_c_cut_short_is_closed_without_a_traceback_once_the_command_is_configured(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLAlchemy closes (invalidates) a connection an interrupt cut into, then fails to close its cursor
    and logs "Error closing cursor" with a traceback (a fault probe: 1 of 4 Ctrl-Cs; by hand, 6 in ~100
    interrupts of store reads). Where no Ctrl-C is behind it, the error is still logged. Pinned to
    SQLAlchemy's `Connection._safe_close_cursor`, which logs it."""
    quiet_cursors_cut_by_ctrl_c()
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    connection = engine.connect()
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    connection.connection.driver_connection.close()  # type: ignore[union-attr]  as SQLAlchemy's invalidation does
    with caplog.at_level(logging.ERROR):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            connection._safe_close_cursor(cursor)  # as SQLAlchemy does while handling the interrupt
        connection._safe_close_cursor(cursor)  # no Ctrl-C behind it
    assert [(r.name, r.msg, type(r.exc_info[1]).__name__ if r.exc_info else None) for r in caplog.records] == \
        [("sqlalchemy.pool.impl.QueuePool", "Error closing cursor", "ProgrammingError")]
    connection.invalidate()


def test_a_record_of_writes_collected_unfinished_takes_nothing_back(store: Store) -> None:
    """A Ctrl-C after the promotion, while the studies were marked finished, left the record's block never
    exited; collected, it was closed (GeneratorExit), which took back the promoted run (a review found it)."""
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("kept")).info.run_id
    record = undone_on_failure()
    record.__enter__().runs.append(run)
    del record
    gc.collect()
    assert client.get_run(run).info.lifecycle_stage == "active"


def test_a_third_ctrl_c_goes_through_a_held_block() -> None:
    """For a take-back that waits on a store that no longer answers (MLflow retries each call for minutes)."""
    reached = []
    with pytest.raises(KeyboardInterrupt), interrupts_held("waiting"):
        for n in range(3):
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before the next line
            reached.append(n)
    assert reached == [0, 1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# A command with its temporary folder: it prints the folder and, where asked, starts its publisher (forked:
# it inherits the hold; afresh: it takes it) and prints its pid once it runs; then it waits to be killed.
WITH_ITS_FOLDER = """
import signal, sys, time
import psutil
from review_sentiment.processes import own_temporary_folder
from review_sentiment.tracking.publisher import NAME, PublisherProcess
with own_temporary_folder() as folder:
    (folder / "half-written").touch()
    print(folder, flush=True)
    if sys.argv[1] != "none":
        publisher = psutil.Process(PublisherProcess(sys.argv[2], forked=sys.argv[1] == "forked")._process.pid)
        while publisher.name() != NAME:  # named once it holds the folder
            time.sleep(0.01)
        print(publisher.pid, flush=True)
    signal.pause()
"""


@pytest.mark.parametrize("left_running", ["none", "forked", "afresh"])
def test_a_folder_a_killed_command_left_is_removed_by_the_next_once_no_process_of_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, left_running: str) -> None:
    """SIGKILL cleans nothing up: a fault probe found MLflow's folder of an artifact being logged left in
    TMPDIR after 1 of 11 kills. The next command removes it, but not while the killed one's publisher still
    runs (finishing a publication there), forked or started afresh; nor anything else in TMPDIR, a FIFO
    where the hold file would be included (opened blocking, it hung every command). Inside the block the
    command's temporary files go to its folder, removed as it ends."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    command = subprocess.Popen([sys.executable, "-c", WITH_ITS_FOLDER, left_running, f"sqlite:///{tmp_path}/m.db"],
                               cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert command.stdout is not None
    left = Path(command.stdout.readline().strip())
    processes = [psutil.Process(int(command.stdout.readline()))] if left_running != "none" else []
    try:
        for process in processes:
            process.suspend()  # as if mid-publication, for as long as the test needs
        command.kill()
        assert command.wait() == -signal.SIGKILL and (left / "half-written").exists()
        (other := tmp_path / "someone-elses").mkdir()
        (lookalike := tmp_path / "review-sentiment-not-made-here").mkdir()  # no hold file: not ours to judge
        (fifo := tmp_path / "review-sentiment-fifo").mkdir()
        os.mkfifo(fifo / ".in-use")
        if processes:
            with own_temporary_folder():
                assert left.exists()  # in use: kept
    finally:
        for process in processes:
            process.kill()
            wait_for(lambda process=process: ended(process), 10, "it to end")
    with own_temporary_folder() as ours:
        assert tempfile.gettempdir() == str(ours) and ours.parent == tmp_path
        assert not left.exists() and other.exists() and lookalike.exists()
        (ours / "model.pkl").touch()
    assert not ours.exists() and tempfile.gettempdir() == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "review-sentiment-fifo", "review-sentiment-not-made-here", "someone-elses"]


def test_the_lines_a_commands_forked_workers_print_reach_its_pipe_whole_even_unbuffered() -> None:
    """Two forked workers print 3,000 progress lines each at once on one pipe, unbuffered as the image runs
    them: after the entry scripts' `cli.configure()` every line arrives whole. Without it, `print` writes a
    line's text and its newline apart: 2,554–2,888 of the 6,000 lines arrived merged (or empty) in 3 runs."""
    script = textwrap.dedent("""
        import os
        from review_sentiment import cli
        cli.configure()
        start, go = os.pipe()
        workers = []
        for name in ("w1", "w2"):
            pid = os.fork()
            if pid == 0:
                os.close(go)
                os.read(start, 1)  # both print at once: they start when the command closes its end
                for n in range(3000):
                    print(f"  trial {n:>4} [{name}]  cv_f1=0.8123  best=0.8200", flush=True)
                os._exit(0)
            workers.append(pid)
        os.close(go)
        for pid in workers:
            os.waitpid(pid, 0)
    """)
    lines = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                           capture_output=True, text=True, check=True).stdout.splitlines()
    merged = [line for line in lines if not re.fullmatch(r"  trial +\d+ \[w[12]\]  cv_f1=0\.8123  best=0\.8200", line)]
    assert len(lines) == 6000 and not merged, merged[:3]
