"""Child runs are written by a writer process: every one sent, by the command and by a forked worker at once,
is in the store once flushed; a writer killed with kill -9 costs gaps the command fills, never the run; a
store the writer made ahead is put in place only for a command that got as far as naming it, and is made
afresh. On an SQL store a child run is inserted as the rows MLflow's own calls leave: tests named
test_pinned_* must pass before the mlflow pin moves."""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import pickle
import resource
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from contextlib import closing
from pathlib import Path

import mlflow
import numpy as np
import optuna
import psutil
import pytest
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial
from sklearn.pipeline import Pipeline
from sqlalchemy import MetaData

from review_sentiment.constants import PROJECT_DIR
from review_sentiment.data.reviews import Split
from review_sentiment.modeling.families import build_pipeline
from review_sentiment.processes import ended
from review_sentiment.tracking import trial_writer
from review_sentiment.tracking.model_logging import compact_for_saving
from review_sentiment.tracking.publication import Publication
from review_sentiment.tracking.publisher import FORK_AT_MOST_REVIEWS  # imported: starting one opens no file
from review_sentiment.tracking.trial_runs import (
    METRIC,
    _inserted,
    _logged,
    child_run,
    log_missing_trial_runs,
    write_trial_runs,
)
from review_sentiment.tracking.trial_writer import (
    TrialWriter,
    _End,
    _Flush,
    _in_batches,
    _made_ahead,
    _TrialRun,
    writer_process,
    writer_thread,
)
from tests.helpers import STRONG, Store, the_split, wait_for


def finished_trials(count: int) -> list[FrozenTrial]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda trial: trial.suggest_float("C", 0.01, 10.0, log=True), n_trials=count)
    return study.trials


def every_kind_of_trial() -> list[FrozenTrial]:
    """Complete, pruned (its partial metric), failed (no value), and values SQL cannot hold as they are."""
    study = optuna.create_study(direction="maximize")
    distributions = {"C": FloatDistribution(0.01, 10.0, log=True)}
    for state, value in ((TrialState.COMPLETE, 0.81), (TrialState.PRUNED, 0.52), (TrialState.FAIL, None),
                         (TrialState.COMPLETE, float("inf")), (TrialState.PRUNED, float("nan"))):
        study.add_trial(create_trial(state=state, value=value, params={"C": 0.5}, distributions=distributions,
                                     user_attrs={"worker": "w1", "failed": "x" * 600}))
    return study.trials


def rows_of(uri: str, run_id: str) -> set[tuple[str, tuple[str, ...]]]:
    """Every row in the store that names the run, in any table, the run's id written as RUN."""
    engine = mlflow.MlflowClient(uri)._tracking_client.store.engine
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as connection:
        return {(table.name, tuple(str(value).replace(run_id, "RUN") for value in row))
                for table in tables.sorted_tables for row in connection.execute(table.select())
                if any(run_id in str(value) for value in row)}


def test_pinned_a_child_run_inserted_in_one_transaction_is_the_rows_mlflows_own_calls_write(store: Store) -> None:
    same_rows_either_way(store.uri)  # a copy of a migrated store: migrating one took ~2 s of this test


def same_rows_either_way(uri: str) -> None:
    """Each kind of trial, in two experiments, written by MLflow's calls one by one and by `_inserted` in one
    batch, leaves the same rows in every table (but the run's id), reads back the same, and is found by the
    same metric filter; a batch that fails, in its checks or in the database, writes none of its runs."""
    client = mlflow.MlflowClient(uri)
    store = client._tracking_client.store
    runs = []
    for name in ("tuning", "other"):
        experiment_id = client.create_experiment(name)
        parent = client.create_run(experiment_id).info.run_id
        runs += [child_run(experiment_id, parent, trial, "MAXIMIZE") for trial in every_kind_of_trial()]
    logged = {(run.experiment_id, run.tags["number"]): _logged(client, run) for run in runs}
    _inserted(store, runs)
    for (experiment_id, number), theirs_id in logged.items():
        [ours_id] = [r.info.run_id for r in client.search_runs([experiment_id], f"tags.number = '{number}'")
                     if r.info.run_id != theirs_id]
        assert rows_of(uri, ours_id) == rows_of(uri, theirs_id), number
        theirs, ours = client.get_run(theirs_id), client.get_run(ours_id)
        assert repr((ours.data.to_dictionary(), ours.info.status, ours.info.run_name)) == \
            repr((theirs.data.to_dictionary(), theirs.info.status, theirs.info.run_name))  # repr: nan is nan
        for key in ours.data.metrics:
            assert [m.to_proto() for m in client.get_metric_history(ours_id, key)] == \
                [m.to_proto() for m in client.get_metric_history(theirs_id, key)]
    found = client.search_runs([runs[0].experiment_id], "metrics.cv_f1_macro > 0.8")
    assert sorted(r.data.tags["number"] for r in found) == ["0", "0", "3", "3"]  # inf: kept as the largest float

    before = len(client.search_runs([runs[0].experiment_id]))
    good = runs[0]
    invalid = dataclasses.replace(good, metrics=[Metric(METRIC, "not a number", 0, 0)])  # type: ignore[arg-type]
    with pytest.raises(MlflowException, match="Invalid value \"not a number\""):
        write_trial_runs(client, [good, invalid])
    refused = dataclasses.replace(good, params=[*good.params, Param(good.params[0].key, "another value")])
    with pytest.raises(MlflowException, match="UNIQUE|unique"):  # refused by the database itself
        write_trial_runs(client, [good, refused])
    assert len(client.search_runs([good.experiment_id])) == before  # not even the good one, either time
    client.delete_experiment(good.experiment_id)  # a deleted experiment takes no child run, as MLflow's calls refuse
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        write_trial_runs(client, [good])


def test_the_writer_takes_child_runs_waiting_together_as_one_batch_in_order_and_none_once_the_command_is_gone() -> None:
    """Trials' messages waiting back to back come as one batch, a flush between them ends it (so a flush is
    answered once everything before it is written), and nothing comes after the end; where the command is
    gone (its end of the socket closed) while a batch is gathered, the batch is left as gaps, not written."""
    trials = finished_trials(4)
    sent = [_TrialRun("1", "p", trials[0], "MAXIMIZE"), _TrialRun("1", "p", trials[1], "MAXIMIZE"), _Flush(),
            _TrialRun("1", "p", trials[2], "MAXIMIZE"), _End(), _TrialRun("1", "p", trials[3], "MAXIMIZE")]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        for message in sent:
            ours.send(pickle.dumps(message))
        got = list(_in_batches(theirs, os.getppid()))
    numbers = [[m.trial.number for m in item] if isinstance(item, list) else item for item in got]
    assert numbers == [[0, 1], _Flush(), [2]]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        with ours:
            ours.send(pickle.dumps(sent[0]))
            ours.send(pickle.dumps(sent[1]))
        assert list(_in_batches(theirs, os.getppid())) == []


def test_a_trial_ending_while_the_batch_of_the_one_before_is_gathered_joins_that_batch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch waits `_GATHER_SECONDS` for the trials that end after its first (two workers' end ~25 ms apart):
    one ending 20 ms after joins it, and a flush ends the wait at once (here 10 s: the test would take that)."""
    monkeypatch.setattr(trial_writer, "_GATHER_SECONDS", 10.0)
    first, second = (_TrialRun("1", "p", trial, "MAXIMIZE") for trial in finished_trials(2))
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        ours.send(pickle.dumps(first))
        later = threading.Timer(0.02, lambda: [ours.send(pickle.dumps(m)) for m in (second, _Flush())])
        later.start()
        batches = _in_batches(theirs, os.getppid())
        batch, flush = next(batches), next(batches)
        later.join()
    assert [m.trial.number for m in batch] == [0, 1] and flush == _Flush()


def test_a_batch_gathered_while_the_command_is_killed_is_left_as_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command killed while a batch waits (its workers keep the socket open, so nothing ends it): the
    batch is not written after it, as what the command sent and the writer did not write yet never is."""
    command, killed = os.getppid(), threading.Event()
    monkeypatch.setattr(trial_writer, "_GATHER_SECONDS", 0.3)
    monkeypatch.setattr(trial_writer.os, "getppid", lambda: 1 if killed.is_set() else command)  # orphaned
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs:
        ours.send(pickle.dumps(_TrialRun("1", "p", finished_trials(1)[0], "MAXIMIZE")))
        threading.Timer(0.02, killed.set).start()
        assert list(_in_batches(theirs, command)) == []


def children(client: mlflow.MlflowClient, experiment_id: str, parent: str) -> dict[str, str]:
    """Each child run's trial number and status."""
    return {run.data.tags["number"]: run.info.status for run in client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)}


def write_all(writer: TrialWriter, experiment_id: str, parent: str, trials: list[FrozenTrial]) -> None:
    for trial in trials:
        writer.write(experiment_id, parent, trial, "MAXIMIZE")


@pytest.mark.e2e  # a writer process, importing MLflow (~3 s of CPU); the fast loop's runs write on a thread
def test_the_command_and_a_forked_worker_write_at_once_and_a_killed_writer_costs_only_gaps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the writer guesses the store the command will name
    trials = finished_trials(21)
    with writer_process() as writer:
        writer.open_store(uri)
        assert (tmp_path / "mlflow.db").exists()  # made by the writer, ahead of the command's asking
        assert not list(tmp_path.glob(".mlflow.db.*"))  # its own name for it is gone once it is in place
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("tuning")
        parent = client.create_run(experiment_id).info.run_id
        worker = multiprocessing.get_context("fork").Process(
            target=write_all, args=(writer, experiment_id, parent, trials[:10]))
        worker.start()
        write_all(writer, experiment_id, parent, trials[10:20])
        worker.join(30)
        assert worker.exitcode == 0
        writer.flush()
        assert children(client, experiment_id, parent) == {str(n): "FINISHED" for n in range(20)}

        os.kill(writer._process.pid, signal.SIGKILL)
        writer._process.wait()
        writer.write(experiment_id, parent, trials[20], "MAXIMIZE")  # neither raises: the trial is a gap ...
        writer.flush()
        assert "20" not in children(client, experiment_id, parent)
        assert log_missing_trial_runs(client, experiment_id, parent, trials, "MAXIMIZE", settle_seconds=0) == 1
        assert children(client, experiment_id, parent) == {str(n): "FINISHED" for n in range(21)}  # ... filled


def test_on_a_thread_a_forked_workers_last_child_run_is_written_too(store: Store) -> None:
    """Where MLflow is imported already, child runs are written on a thread; a forked worker has no copy of
    it and writes its own, all of them, before it ends (it ends with os._exit, which joins no thread)."""
    uri = store.uri
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("tuning")
    parent = client.create_run(experiment_id).info.run_id
    trials = finished_trials(6)
    with writer_thread() as writer:
        writer.open_store(uri)
        worker = multiprocessing.get_context("fork").Process(
            target=write_all, args=(writer, experiment_id, parent, trials[:3]))
        worker.start()
        write_all(writer, experiment_id, parent, trials[3:])
        worker.join(30)
        assert worker.exitcode == 0
        writer.flush()
        assert children(client, experiment_id, parent) == {str(n): "FINISHED" for n in range(6)}


@pytest.mark.e2e  # a second writer process, waited for until it has made a store (~3 s)
def test_a_command_that_fails_before_naming_its_store_leaves_none(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that would publish fails before naming its store: the writer ends, leaving nothing, and
    no publisher was forked."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(ValueError, match="bad reviews"), writer_process(publishes=True) as writer:
        wait_for(lambda: list(tmp_path.glob(".mlflow.db.*.new")), 60, "the writer making the store ahead")
        raise ValueError("bad reviews")  # e.g. the data: found before anything is tracked
    assert writer._process.returncode is not None and writer._publisher is None
    assert list(tmp_path.iterdir()) == []


def test_a_store_made_ahead_is_made_afresh_where_a_killed_writer_of_the_same_pid_left_its_file(
        tmp_path: Path) -> None:
    """Pids repeat (in containers, from run to run): a file under the same name, maybe cut short mid-migration
    (made without a rollback journal on disk), is never carried on from."""
    store, ahead = tmp_path / "mlflow.db", tmp_path / ".mlflow.db.7.new"
    with closing(sqlite3.connect(ahead)) as db, db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")  # a migration's first steps, then
        db.execute("INSERT INTO alembic_version VALUES ('451aebb31d03')")  # killed: its tables never made
    assert _made_ahead(store, ahead, f"sqlite:///{store}")
    assert not store.exists()  # the store's own name is the command's to link
    client = mlflow.MlflowClient(f"sqlite:///{ahead}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert client.create_experiment("tuning")  # every table is there


@functools.cache
def fitted() -> tuple[Split, Pipeline]:
    """The sample's split, and a model fitted on it (once per test process)."""
    split = the_split()
    return split, compact_for_saving(build_pipeline("LogisticRegression", STRONG, 0).fit(split.X_train,
                                                                                          split.y_train))


def publication(run_id: str, name: str, family: str) -> Publication:
    """A fitted model handed to the writer as the tuning run hands one: into `run_id`, registered as `name`."""
    split, pipeline = fitted()
    return Publication(run_id, name, "LogisticRegression", pipeline, ["great"], np.asarray(split.y_test),
                       pipeline.predict(split.X_test), pipeline.predict_proba(split.X_test)[:, 1], "sigmoid",
                       {"family": family})


@pytest.mark.e2e  # a writer process importing MLflow, and a publisher importing skops and matplotlib
@pytest.mark.parametrize("reviews", [FORK_AT_MOST_REVIEWS, FORK_AT_MOST_REVIEWS + 1], ids=["forked", "afresh"])
def test_a_model_handed_over_is_published_by_the_publisher_while_the_writer_writes_child_runs(
        store: Store, reviews: int) -> None:
    """The publisher (started once the store is named: forked from the command, or afresh where it holds
    more reviews; named so in ps) publishes into the run it is given (and its experiment), leaving the run's
    status alone; meanwhile the trials' child runs are written; both are in once flushed. (Its registry is
    the store's too: an earlier test's `mlflow.set_registry_uri` must not leak into it.)"""
    uri = store.uri
    with writer_process(publishes=True) as writer:
        writer.open_store(uri, reviews)
        assert writer._publisher is not None
        publisher = psutil.Process(writer._publisher._process.pid)
        wait_for(lambda: publisher.name() == "publisher", 30, "the publisher to name itself")
        # started afresh, it runs multiprocessing's spawn entry point; forked, the command's command line
        assert ("multiprocessing" in " ".join(publisher.cmdline())) == (reviews > FORK_AT_MOST_REVIEWS)
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("tuning")
        parent = client.create_run(experiment_id).info.run_id
        version = writer.publish(publication(parent, "m", "LogisticRegression"))
        assert writer.publishing()  # it imports what publishing needs first (~0.7 s)
        write_all(writer, experiment_id, parent, finished_trials(3))
        published = version()
        assert published is not None
        assert (published.name, str(published.version), published.run_id) == ("m", "1", parent)
        assert not writer.publishing()
        writer.flush()
        assert children(client, experiment_id, parent) == {str(n): "FINISHED" for n in range(3)}
    assert ended(publisher)
    run = client.get_run(parent)
    assert run.info.status == "RUNNING"  # as its maker left it: named, not started again
    assert {"confusion_matrix.png", "reliability_diagram.png"} <= {a.path for a in client.list_artifacts(parent)}
    assert run.data.metrics["model_size_bytes"] > 0
    [model] = client.search_logged_models([experiment_id])
    assert model.source_run_id == parent and model.model_id in published.source


def publish_three_and_die(uri: str, publisher_pid: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    """A command that hands its publisher three models and is killed once the first is published."""
    with writer_process(publishes=True) as writer:
        writer.open_store(uri)  # a new store: returns once the writer is ready
        assert writer._publisher is not None
        publisher_pid.put(writer._publisher._process.pid)
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("tuning")
        first, *_ = [writer.publish(publication(client.create_run(experiment_id).info.run_id, family, family))
                     for family in ("LogisticRegression", "NaiveBayes", "LinearSVM")]
        assert first() is not None
        os.kill(os.getpid(), signal.SIGKILL)


def interrupted_while_it_waits(uri: str, temporary: Path, writer_behind: bool,
                               publisher_ended: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    """A failed command waits for its publisher to publish the three models it handed over (as `flush` does
    before the run takes back what it wrote), and a second Ctrl-C comes meanwhile, once the first
    publication stages its files: whether the publisher had ended by the time the command got its
    KeyboardInterrupt. `writer_behind`: the flush is still waiting for the writer then (stopped, SIGSTOP).
    The command and its processes make their temporary files in `temporary`."""
    os.environ["TMPDIR"], tempfile.tempdir = str(temporary), str(temporary)
    with writer_process(publishes=True) as writer:
        writer.open_store(uri)
        assert writer._publisher is not None
        publisher, staging = psutil.Process(writer._publisher._process.pid), writer._publisher.staging
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("tuning")
        for family in ("LogisticRegression", "NaiveBayes", "LinearSVM"):
            writer.publish(publication(client.create_run(experiment_id).info.run_id, family, family))

        main = threading.get_ident()

        def in_flush() -> bool:
            """In a call the flush makes (its first line, before its `try`, calls none in Python)."""
            frame = top = sys._current_frames().get(main)
            while frame is not None and frame.f_code is not type(writer).flush.__code__:
                frame = frame.f_back
            return frame is not None and frame is not top

        def interrupt_once_staging() -> None:  # in the flush, not before it (CI: during Thread.start)
            wait_for(lambda: staging.exists() and in_flush(), 60, "the flush, the first publication staging", 0.01)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt_once_staging).start()
        if writer_behind:
            os.kill(writer._process.pid, signal.SIGSTOP)
        try:
            writer.flush()
        except KeyboardInterrupt:
            publisher_ended.put(ended(publisher))
        finally:
            os.kill(writer._process.pid, signal.SIGCONT)


@pytest.mark.e2e  # a writer process importing MLflow, and a publisher importing skops and matplotlib
@pytest.mark.parametrize("writer_behind", [False, True], ids=["waiting for the publisher", "for the writer"])
def test_a_second_ctrl_c_while_a_failed_command_waits_for_its_publisher_stops_the_publisher_first(
        untouched_store: Store, tmp_path: Path, writer_behind: bool) -> None:
    """Otherwise the publisher would go on registering versions after the run has taken back its runs:
    versions of deleted runs, left behind (a helper's probe: 2 of 10 double Ctrl-Cs). So too where the
    flush is still waiting for the writer. Stopped mid-publication, the publisher leaves none of its
    temporary files (SIGKILL left the model's files in TMPDIR)."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    publisher_ended: multiprocessing.SimpleQueue[bool] = multiprocessing.get_context("fork").SimpleQueue()
    command = multiprocessing.get_context("fork").Process(
        target=interrupted_while_it_waits, args=(untouched_store.uri, temporary, writer_behind, publisher_ended))
    command.start()
    command.join(120)
    assert command.exitcode == 0 and not publisher_ended.empty()
    assert publisher_ended.get()
    assert len(mlflow.MlflowClient(untouched_store.uri).search_model_versions("")) <= 1  # not all three
    assert list(temporary.iterdir()) == []


def flushed_with_nothing_handed_over(uri: str, seen: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    """A command that flushes before handing its publisher anything, the publisher stopped (SIGSTOP)."""
    with writer_process(publishes=True) as writer:
        writer.open_store(uri)
        assert writer._publisher is not None
        os.kill(writer._publisher._process.pid, signal.SIGSTOP)
        try:
            writer.flush()
            seen.put(True)
        finally:
            os.kill(writer._publisher._process.pid, signal.SIGCONT)


@pytest.mark.e2e  # a writer process importing MLflow
def test_a_flush_with_no_model_handed_over_does_not_wait_for_the_publisher(store: Store) -> None:
    """Nothing to wait for: not its start-up imports (seconds), as a run that fails early (an early Ctrl-C,
    every trial of the first family failed) flushes before it takes back what it wrote."""
    seen: multiprocessing.SimpleQueue[bool] = multiprocessing.get_context("fork").SimpleQueue()
    command = multiprocessing.get_context("fork").Process(target=flushed_with_nothing_handed_over,
                                                          args=(store.uri, seen))
    command.start()
    command.join(60)
    if command.exitcode is None:  # waiting for the stopped publisher
        command.kill()
        command.join()
    assert command.exitcode == 0 and seen.get()


def answered_then_killed(uri: str, seen: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    """A command whose publisher answers a model, then is killed before the command has read the answer:
    whether the flush still reads it (the version is known, not looked for again)."""
    with writer_process(publishes=True) as writer:
        writer.open_store(uri)
        assert writer._publisher is not None
        client = mlflow.MlflowClient(uri)
        version = writer.publish(publication(client.create_run(client.create_experiment("tuning")).info.run_id,
                                             "m", "LogisticRegression"))
        answers = writer._publisher._socket
        wait_for(lambda: select.select([answers], [], [], 0)[0], 60, "the publisher to answer")
        os.kill(writer._publisher._process.pid, signal.SIGKILL)
        wait_for(lambda: ended(psutil.Process(writer._publisher._process.pid)), 10, "the publisher to end")
        writer.flush()
        published = version()
        seen.put(published is not None and str(published.version) == "1")


@pytest.mark.e2e  # a writer process importing MLflow, and a publisher importing skops and matplotlib
def test_an_answer_given_before_the_publisher_died_is_read(store: Store) -> None:
    """Its answers still wait in the socket: the flush reads them, though it can no longer ask it anything."""
    seen: multiprocessing.SimpleQueue[bool] = multiprocessing.get_context("fork").SimpleQueue()
    command = multiprocessing.get_context("fork").Process(target=answered_then_killed, args=(store.uri, seen))
    command.start()
    command.join(120)
    assert command.exitcode == 0 and seen.get()


@pytest.mark.e2e  # a publisher importing what publishing needs
@pytest.mark.parametrize("forked", [True, False], ids=["forked", "afresh"])
def test_a_ctrl_c_as_the_publisher_starts_is_the_commands_alone(store: Store, forked: bool) -> None:
    """Ctrl-C reaches the terminal's whole process group: one that comes while the publisher starts (a
    fresh process needs ~50 ms before it can ignore it) neither ends it nor prints its traceback. In a
    fresh interpreter, as the command: spawning starts multiprocessing's resource tracker first."""
    script = f"""
import os, signal, sys
import psutil
from review_sentiment.tracking.publisher import PublisherProcess
from tests.helpers import wait_for
from review_sentiment.processes import ended

if __name__ == "__main__":
    publisher = PublisherProcess({store.uri!r}, forked={forked})
    os.kill(publisher._process.pid, signal.SIGINT)
    process = psutil.Process(publisher._process.pid)
    wait_for(lambda: ended(process) or process.name() == "publisher", 60, "the publisher to start")
    print("running" if not ended(process) else "ended", flush=True)
    publisher.close()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_DIR, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(PROJECT_DIR)))
    assert (done.returncode, done.stdout.strip()) == (0, "running"), done.stderr
    assert "Traceback" not in done.stderr


def without_a_publisher(uri: str, seen: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    """A command whose publisher cannot be started (no file descriptor left as it names its existing store):
    whether it has none, whether a model handed over comes back unpublished (the command then publishes
    it itself), and whether the trials' child runs are still written."""
    with writer_process(publishes=True) as writer:
        lowest = os.dup(0)  # the lowest free descriptor: with the limit there, none is left
        os.close(lowest)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))
        try:
            writer.open_store(uri)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        seen.put(writer._publisher is None)
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("tuning")
        parent = client.create_run(experiment_id).info.run_id
        seen.put(writer.publish(publication(parent, "m", "LogisticRegression"))() is None)
        write_all(writer, experiment_id, parent, finished_trials(2))
        writer.flush()
        seen.put(children(client, experiment_id, parent) == {"0": "FINISHED", "1": "FINISHED"})


@pytest.mark.e2e  # a writer process importing MLflow
def test_a_publisher_that_cannot_be_started_is_one_line_and_the_command_publishes(
        store: Store, capfd: pytest.CaptureFixture[str]) -> None:
    """Starting it fails where the machine has no room for another process or descriptor: the run goes
    on, its models published by the command (`release_by`), not a traceback."""
    assert store.path.joinpath("mlflow.db").exists()  # opening a new one would import (and so open files)
    seen: multiprocessing.SimpleQueue[bool] = multiprocessing.get_context("fork").SimpleQueue()
    command = multiprocessing.get_context("fork").Process(target=without_a_publisher, args=(store.uri, seen))
    command.start()
    command.join(120)
    assert command.exitcode == 0
    assert [seen.get() for _ in range(3)] == [True, True, True]
    err = capfd.readouterr().err
    assert "could not start the publisher process ([Errno 24] Too many open files)" in err
    assert "Traceback" not in err


@pytest.mark.e2e  # a writer process importing MLflow, and a publisher importing skops and matplotlib
def test_a_command_killed_with_models_handed_over_gets_only_the_one_under_way_published(
        untouched_store: Store) -> None:
    """Once the command is gone (kill -9), its publisher finishes the publication under way and starts no
    other (a rerun would register it too), then ends."""
    uri = untouched_store.uri
    publisher_pid: multiprocessing.SimpleQueue[int] = multiprocessing.get_context("fork").SimpleQueue()
    command = multiprocessing.get_context("fork").Process(target=publish_three_and_die, args=(uri, publisher_pid))
    command.start()
    command.join(120)
    assert command.exitcode == -signal.SIGKILL
    publisher = psutil.Process(publisher_pid.get())
    wait_for(lambda: ended(publisher), 60, "the publisher to end")
    published = sorted(v.name for v in mlflow.MlflowClient(uri).search_model_versions(""))
    # the first, answered; the second if it had started as the command died; never the third
    assert published in (["LogisticRegression"], ["LogisticRegression", "NaiveBayes"])
