"""The worker's trial loop against Optuna's own: `trial_queue` claims queued trials by their storage id
(Optuna's private `_trial_id`) and runs Optuna's stale check, heartbeat and tell itself. The tests named
test_pinned_* must pass before the optuna pin moves."""
from __future__ import annotations

import functools
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import optuna
import psutil
import pytest
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from review_sentiment.training import journal
from review_sentiment.training.journal import HEARTBEAT, FileJournal, HeartbeatJournal, JournalLost
from review_sentiment.training.study import Storage, pruner, sampler
from review_sentiment.training.trial_queue import (
    fail_stale_trials,
    finished_by_workers,
    run_queued_trials,
    set_trial_budget,
    unfinished,
)
from review_sentiment.training.workers import local_workers, parent_alive
from tests.helpers import wait_for


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    if x > 8:
        raise optuna.TrialPruned()
    return (x - 2) ** 2 + trial.suggest_int("n", 0, 3)


CLAIM_WRITES = [("create_new_trial", TrialState.WAITING), ("record_heartbeat", TrialState.WAITING),
                ("set_trial_state_values", TrialState.RUNNING)]  # a claim's writes, and the trial each leaves
Where = Path | str  # a file (SQLite, journal), or a PostgreSQL URL (tests/e2e/test_postgres_journal.py)


def storage_at(where: Where, interval: int = 60, grace: int = 120,
               on_stale: RetryFailedTrialCallback | None = None) -> Storage:
    """The storage kinds a run's studies live in: an SQLite file (RDBStorage), a journal file, or a
    journal in PostgreSQL."""
    if isinstance(where, str):
        from review_sentiment.training.postgres_journal import PostgresJournal  # e2e tests only: psycopg
        journal = PostgresJournal.open(where)
        assert journal is not None
        return HeartbeatJournal(journal, interval, grace, on_stale)
    if where.suffix == ".journal":
        return HeartbeatJournal(FileJournal(where), interval, grace, on_stale)
    return RDBStorage(f"sqlite:///{where}", heartbeat_interval=interval, grace_period=grace,
                      heartbeat_stale_trial_callback=on_stale)


def study_in(where: Where, tpe: optuna.samplers.BaseSampler | None = None) -> tuple[Storage, optuna.Study]:
    storage = storage_at(where)
    return storage, optuna.create_study(storage=storage, sampler=tpe or optuna.samplers.TPESampler(seed=3),
                                        study_name="s")


@pytest.mark.parametrize(("shared", "file"), [(False, "ours.db"), (True, "ours.db"), (True, "ours.journal")])
def test_pinned_claimed_trials_run_as_optunas_own_loop_runs_them(shared: bool, file: str, tmp_path: Path) -> None:
    """The tuning run's sampler, with one worker and with several (constant liar), on claimed trials."""
    storage, ours = study_in(tmp_path / file, sampler(3, shared))
    set_trial_budget(ours, 25)
    done: list[int] = []
    assert run_queued_trials(storage, ours, objective, (), "w0", lambda _, t: done.append(t.number)) == 25
    optunas = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3, constant_liar=shared))  # in memory
    optunas.optimize(objective, n_trials=25)

    assert done == list(range(25)) and unfinished(ours) == []
    assert [(t.number, t.state, t.params, t.value) for t in ours.trials] == [
        (t.number, t.state, t.params, t.value) for t in optunas.trials]  # same sampler draws, same outcomes
    assert {t.state for t in ours.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(t.user_attrs["worker"] == "w0" and t._trial_id == storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("s"), t.number) for t in ours.trials)


def _run_as(where: Where, worker: str) -> None:
    """A worker whose storage takes 0.2 s to queue a trial: without the claim lock, workers that all read
    the budget unspent before one of them queues its trial overshoot it (seen: 6 of 5)."""
    storage = storage_at(where)
    study = optuna.load_study(study_name="s", storage=storage)
    queue = study._storage.create_new_trial  # trials are queued through the study's storage

    def slowly(*args: Any, **kwargs: Any) -> int:
        time.sleep(0.2)
        return queue(*args, **kwargs)

    study._storage.create_new_trial = slowly  # type: ignore[method-assign]
    run_queued_trials(storage, study, objective, (), worker, lambda *_: None)


@pytest.mark.e2e  # three forked workers race for the trials (~1-1.5 s each storage)
@pytest.mark.parametrize("file", ["s.db", "s.journal"])
def test_workers_racing_for_a_lazily_queued_budget_run_exactly_the_budget(file: str, tmp_path: Path) -> None:
    race_for_a_budget(tmp_path / file)


def race_for_a_budget(where: Where) -> None:
    """Trials are queued as workers claim them: three processes at once queue and run exactly 5, none twice."""
    storage, study = study_in(where)
    set_trial_budget(study, 5)
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_run_as, args=(where, f"w{i}")) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(5)) and unfinished(study) == []
    assert len({t.user_attrs["worker"] for t in trials}) > 1  # they did run side by side


def folds(trial: optuna.Trial) -> float:
    """Five reports, pruned when the pruner says so, as the tuning objective does."""
    x = trial.suggest_float("x", -10, 10)
    for fold in range(5):
        trial.report(-abs(x - 2) - fold / 10, fold)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return -abs(x - 2)


def test_pinned_the_pruner_at_trial_start_decides_as_optunas_median_pruner_with_one_worker(tmp_path: Path) -> None:
    """`pruner()` reads the complete trials once a trial (the sampler's read), not after every report."""
    storage = storage_at(tmp_path / "ours.journal")
    ours = optuna.create_study(storage=storage, sampler=sampler(5, shared=False), pruner=pruner(),
                               study_name="s", direction="maximize")
    set_trial_budget(ours, 30)
    run_queued_trials(storage, ours, folds, (), "w0", lambda *_: None)
    optunas = optuna.create_study(direction="maximize",  # in memory
                                  sampler=optuna.samplers.TPESampler(seed=5, constant_liar=False),
                                  pruner=optuna.pruners.MedianPruner(n_startup_trials=5))
    optunas.optimize(folds, n_trials=30)

    assert [(t.state, t.value, t.last_step) for t in ours.trials] == [
        (t.state, t.value, t.last_step) for t in optunas.trials]
    assert sum(t.state == TrialState.PRUNED for t in ours.trials) >= 5


def _claim_and_die_after(where: Where, write: str) -> None:
    """A worker SIGKILLed right after one of its claim's writes to the storage."""
    storage = storage_at(where)
    study = optuna.load_study(study_name="s", storage=storage)
    writer = study._storage if write == "create_new_trial" else storage  # trials are queued through the study's
    written = getattr(writer, write)

    def written_then_dead(*args: object, **kwargs: object) -> None:
        written(*args, **kwargs)
        os._exit(9)  # no cleanup of any kind

    setattr(writer, write, written_then_dead)
    run_queued_trials(storage, study, objective, (), "dies", lambda *_: None)


@pytest.mark.e2e  # forked workers killed mid-claim, and the studies waited on until they fail the trials (~7 s)
@pytest.mark.parametrize("file", ["s.db", "s.journal"])
@pytest.mark.parametrize(("write", "left"), CLAIM_WRITES)
def test_a_worker_killed_after_any_write_of_a_claim_leaves_no_trial_the_study_waits_for_forever(
        write: str, left: TrialState, file: str, tmp_path: Path) -> None:
    killed_after_a_write_of_a_claim(tmp_path / file, write, left)


def killed_after_a_write_of_a_claim(where: Where, write: str, left: TrialState) -> None:
    """Optuna fails a RUNNING trial as stale only once it has a heartbeat: a claim that set RUNNING first and
    died before its heartbeat left a trial every later worker waited for, forever (a resume hung in CI).
    Killed after any write of a claim, the trial is taken by the next worker, at once or once stale."""
    _, study = study_in(where)
    set_trial_budget(study, 3)
    dying = multiprocessing.get_context("fork").Process(target=_claim_and_die_after, args=(where, write))
    dying.start()
    dying.join(60)
    assert dying.exitcode == 9
    assert [t.state for t in study.get_trials()] == [left]  # killed where this case says
    storage = storage_at(where, interval=1, grace=2, on_stale=RetryFailedTrialCallback())  # stale: 2 s silent
    study = optuna.load_study(study_name="s", storage=storage)
    ran, deadline = 0, time.monotonic() + 30
    while (ran := ran + run_queued_trials(storage, study, objective, (), "next", lambda *_: None)) < 3:
        assert time.monotonic() < deadline, f"the study still waits for {unfinished(study)}"
        time.sleep(0.1)
    assert unfinished(study) == [] and len(finished_by_workers(study)) == 3


def test_a_study_of_an_earlier_release_runs_the_trials_it_queued_up_front(tmp_path: Path) -> None:
    """Before budgets, a study queued all its trials at its start: resumed now, it runs exactly those."""
    storage, study = study_in(tmp_path / "s.db")
    for _ in range(4):
        study.enqueue_trial({})
    assert run_queued_trials(storage, study, objective, (), "w0", lambda *_: None) == 4
    assert len(study.trials) == 4 and unfinished(study) == []


@pytest.mark.e2e  # waits out a heartbeat's grace period (2 s)
def test_the_journal_fails_as_stale_a_running_trial_silent_past_its_grace_only(tmp_path: Path) -> None:
    stale_past_the_grace_only(tmp_path / "s.journal")


def stale_past_the_grace_only(where: Where) -> None:
    """As RDBStorage does: a RUNNING trial that never beat is not stale; one whose last beat is older than
    the grace period is, and its retry does not carry that beat; a beat on a finished trial is ignored."""
    journal = storage_at(where, interval=1, grace=2, on_stale=RetryFailedTrialCallback())
    study = optuna.create_study(storage=journal, study_name="s")
    silent, beating, done = (journal.create_new_trial(study._study_id) for _ in range(3))  # created RUNNING
    journal.record_heartbeat(beating)
    journal.set_trial_state_values(done, TrialState.COMPLETE, [1.0])
    journal.record_heartbeat(done)  # too late: no error, no beat
    assert journal._get_stale_trial_ids(study._study_id) == []  # beat within the grace period
    deadline = time.monotonic() + 15
    while journal._get_stale_trial_ids(study._study_id) != [beating]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert HEARTBEAT not in journal.get_trial(silent).system_attrs | journal.get_trial(done).system_attrs
    fail_stale_trials(study)
    retry = study.get_trials(states=(TrialState.WAITING,))
    assert journal.get_trial(beating).state == TrialState.FAIL and len(retry) == 1
    assert retry[0].system_attrs["failed_trial"] == 1 and HEARTBEAT not in retry[0].system_attrs


def test_a_line_a_killed_writer_left_half_written_is_cut_before_the_next_write(tmp_path: Path) -> None:
    """SIGKILL can cut a `write` where it crosses a page: the next line must not be glued to that tail (it
    was then lost, and every later read of the file failed)."""
    path = tmp_path / "s.journal"
    _, study = study_in(path)
    first = study._storage.create_new_trial(study._study_id)
    with path.open("ab") as journal:
        journal.write(b'{"op_code":4,"worker_id":"dead-1","study_id":0,"datetime_sta')  # no newline: cut mid-line
    reopened = storage_at(path)  # a fresh process's view
    second = reopened.create_new_trial(study._study_id)
    assert second != first and path.read_bytes().endswith(b"\n") and b"dead-1" not in path.read_bytes()
    assert [t._trial_id for t in storage_at(path).get_all_trials(study._study_id)] == [first, second]


def test_the_journal_file_holds_the_bytes_optunas_own_backend_writes(tmp_path: Path) -> None:
    """`FileJournal.append_logs` mirrors Optuna's (less its fsync): any Optuna reads the file as its own."""
    logs = [{"op_code": 0, "worker_id": "w-1", "study_name": "s", "directions": [1]},
            {"op_code": 5, "worker_id": "w-1", "trial_id": 0, "step": 3, "intermediate_value": 0.8125, "note": "é"}]
    ours, theirs = FileJournal(tmp_path / "ours.journal"), JournalFileBackend(str(tmp_path / "theirs.journal"))
    for batch in (logs[:1], logs):
        ours.append_logs(batch)
        theirs.append_logs(batch)
    assert (tmp_path / "ours.journal").read_bytes() == (tmp_path / "theirs.journal").read_bytes()
    assert list(JournalFileBackend(str(tmp_path / "ours.journal")).read_logs(0)) == [*logs[:1], *logs]


class _Broken(Exception):
    pass


def _every_ending(trial: optuna.Trial) -> float:
    """Complete, pruned or failed, by the trial's number; a parameter and a fold report each."""
    x = trial.suggest_float("x", 0, 1)
    trial.report(x, 0)
    if trial.number % 3 == 1:
        raise optuna.TrialPruned()
    if trial.number % 3 == 2:
        raise _Broken("fails its trial")
    return x


def _trials_of(storage: optuna.storages.BaseStorage) -> list[tuple[str, list[FrozenTrial]]]:
    return [(study.study_name, storage.get_all_trials(study._study_id)) for study in storage.get_all_studies()]


def _replayed_by_optuna(path: Path) -> list[tuple[str, list[FrozenTrial]]]:
    return _trials_of(optuna.storages.JournalStorage(JournalFileBackend(str(path))))


@pytest.fixture
def snapshots_after_100_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process keeps a snapshot once it replayed 100 logs (not 2,000): a few runs of trials are enough."""
    monkeypatch.setattr(journal, "_SNAPSHOT_AFTER_LOGS", 100)


def _runs_of_trials(storage: Storage, runs: range) -> None:
    """Studies of three families each, their trials ending every way, as tuning runs leave them."""
    for run in runs:
        for family in ("a", "b", "c"):
            study = optuna.create_study(storage=storage, study_name=f"{run}-{family}", direction="maximize")
            study.optimize(_every_ending, n_trials=6, catch=(_Broken,))


@pytest.mark.usefixtures("snapshots_after_100_logs")
def test_a_journal_opened_from_its_snapshot_holds_what_replaying_every_log_does(tmp_path: Path) -> None:
    """A process that replayed enough of the journal keeps a snapshot; the next restores it and replays only
    the logs appended since, by whichever process: the same studies and trials, to every attribute, as
    Optuna's own storage replaying the file from its first line."""
    path = tmp_path / "s.journal"
    _runs_of_trials(storage_at(path), range(3))
    assert not (tmp_path / "s.journal.snapshot").exists()  # the first process replayed nothing: it wrote them
    storage_at(path)  # the next replays them all, and keeps a snapshot
    _runs_of_trials(storage_at(path), range(3, 4))  # restored; more appended after the snapshot
    reopened = storage_at(path)
    assert isinstance(reopened, HeartbeatJournal) and isinstance(reopened.backend, FileJournal)
    assert 0 < reopened.restored_logs < sum(1 for _ in path.open("rb"))
    assert _trials_of(reopened) == _replayed_by_optuna(path)
    assert len(_trials_of(reopened)) == 12


@pytest.mark.usefixtures("snapshots_after_100_logs")
def test_a_snapshot_left_beside_a_journal_begun_anew_is_not_restored(tmp_path: Path) -> None:
    """The journal removed (and its studies with it), its snapshot left: a new journal is not read as the
    old one's continuation, even once it is longer than the old one was."""
    path = tmp_path / "s.journal"
    _runs_of_trials(storage_at(path), range(2))
    storage_at(path)  # keeps a snapshot
    path.unlink()
    _runs_of_trials(storage_at(path), range(5, 8))
    reopened = storage_at(path)
    assert isinstance(reopened, HeartbeatJournal) and isinstance(reopened.backend, FileJournal)
    assert reopened.restored_logs == 0
    assert [name for name, _ in _trials_of(reopened)] == [f"{run}-{f}" for run in range(5, 8) for f in "abc"]


@pytest.mark.parametrize("change", ["tail lost, then regrown", "another time zone", "a pickle Optuna cannot load",
                                    "a header of another format"])
@pytest.mark.usefixtures("snapshots_after_100_logs")
def test_a_snapshot_that_no_longer_matches_its_journal_is_not_restored(
        change: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each way a snapshot can stop describing what replaying its journal gives (a review found the first
    two silently restored): a power cut costs the journal unsynced logs the snapshot holds, and more are
    appended after; Optuna's replay gives local times; a pickle of classes Optuna no longer has. The
    journal is then replayed, to the same studies and trials as Optuna's own storage gives."""
    path = tmp_path / "s.journal"
    _runs_of_trials(storage_at(path), range(3))
    storage_at(path)  # keeps a snapshot
    snapshot = tmp_path / "s.journal.snapshot"
    assert storage_at(path).restored_logs > 0
    if change == "tail lost, then regrown":
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[:len(lines) * 2 // 3]))
        appending = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(tmp_path / "optunas")))
        study = optuna.create_study(storage=optuna.storages.JournalStorage(appending), study_name="after",
                                    direction="maximize")
        study.optimize(_every_ending, n_trials=30, catch=(_Broken,))
        assert path.stat().st_size > len(b"".join(lines))  # longer than it was when the snapshot was kept
    elif change == "another time zone":
        monkeypatch.setenv("TZ", "Asia/Tokyo")
        time.tzset()
    elif change == "a pickle Optuna cannot load":
        header, _, _ = snapshot.read_bytes().partition(b"\n")
        snapshot.write_bytes(header + b"\n" + b"cno_such_module\nReplayResult\n.")  # its class gone: raises
    else:  # a later release's, say: its logs and offset as now, the rest named otherwise
        header_line, _, pickled = snapshot.read_bytes().partition(b"\n")
        header = {k: v for k, v in json.loads(header_line).items() if k in ("logs", "offset", "last_bytes")}
        snapshot.write_bytes(json.dumps(header | {"format": 2}).encode() + b"\n" + pickled)
    try:
        reopened = storage_at(path)
        assert reopened.restored_logs == 0
        assert _trials_of(reopened) == _replayed_by_optuna(path)
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.usefixtures("snapshots_after_100_logs")
def test_optunas_own_saves_inside_the_trials_write_nothing_and_a_killed_saves_file_is_removed_later(
        tmp_path: Path) -> None:
    """Optuna saves a snapshot at every 100th trial it creates: in a trial's way, where a failed write
    failed the trial (a review: a run crashed at trial 100 in a folder it could not write to). Only a
    process that opened the journal saves one. A save's temporary file that a kill left is removed by a
    later save once it is a minute old; a younger one may be a save under way, and stays."""
    path = tmp_path / "s.journal"
    study = optuna.create_study(storage=storage_at(path), study_name="s")
    study.optimize(objective, n_trials=110)
    assert [f.name for f in tmp_path.iterdir() if "snapshot" in f.name] == []
    killed, saving = tmp_path / ".s.journal.snapshot.killed", tmp_path / ".s.journal.snapshot.saving"
    killed.write_bytes(b"half")
    saving.write_bytes(b"half")
    os.utime(killed, (time.time() - 120, time.time() - 120))
    assert storage_at(path).restored_logs == 0  # replays 110 trials' logs, and keeps a snapshot
    assert sorted(f.name for f in tmp_path.iterdir() if "snapshot" in f.name) == [saving.name, "s.journal.snapshot"]


@pytest.mark.usefixtures("snapshots_after_100_logs")
def test_a_snapshot_another_user_could_have_written_is_not_loaded(tmp_path: Path) -> None:
    """Loading a pickle runs what it holds: a snapshot others may write (group or world writable, or not
    the user's own) is not restored, even in a shared folder where the journal itself is group writable."""
    path = tmp_path / "s.journal"
    _runs_of_trials(storage_at(path), range(2))
    path.chmod(0o664)
    storage_at(path)  # keeps a snapshot
    snapshot = tmp_path / "s.journal.snapshot"
    assert snapshot.stat().st_mode & 0o777 == 0o644
    assert FileJournal(path).load_snapshot() is not None
    snapshot.chmod(0o664)
    assert FileJournal(path).load_snapshot() is None
    if os.geteuid() == 0:  # root can give it away: another user's, writable by its owner alone
        snapshot.chmod(0o644)
        os.chown(snapshot, 65534, -1)
        assert FileJournal(path).load_snapshot() is None


def test_the_journal_syncs_each_trial_end_retry_and_study_write_and_nothing_a_running_trial_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut may cost what running trials wrote, never a trial's end (complete, pruned, failed, or
    failed as stale: its child run is written after it), the retry queued for a dead worker's trial, nor a
    study's attribute: each such line is fsynced as it is appended (an fsync covers every byte before it),
    and a trial's claim, parameters, fold reports and attributes, heartbeats included, are not."""
    path, synced_at = tmp_path / "s.journal", set()
    fsync = os.fsync

    def recorded(descriptor: int) -> None:
        fsync(descriptor)
        synced_at.add(os.fstat(descriptor).st_size)

    monkeypatch.setattr(os, "fsync", recorded)
    storage = storage_at(path, interval=60, grace=2, on_stale=RetryFailedTrialCallback())
    study = optuna.create_study(storage=storage, study_name="s")
    set_trial_budget(study, 7)
    dead = storage.create_new_trial(study._study_id)  # a worker that died running it, its last beat long ago
    storage.set_trial_system_attr(dead, HEARTBEAT, time.time() - 60)
    run_queued_trials(storage, study, _every_ending, (_Broken,), "w0", lambda *_: None)
    study.set_user_attr("registered_version", "3")

    ends, offset, kinds = set(), 0, set()
    for line in path.read_bytes().splitlines(keepends=True):
        offset += len(line)
        log = json.loads(line)
        state = TrialState(log.get("state", TrialState.RUNNING))
        study_write = log["op_code"] in (0, 1, 2, 3, 10)
        trial_end = log["op_code"] in (4, 6) and state.is_finished()
        retry = log["op_code"] == 4 and "failed_trial" in log.get("system_attrs", {})
        kinds |= {state.name} if trial_end else {"retry"} if retry else set()
        if study_write or trial_end or retry:
            ends.add(offset)
    assert kinds == {"COMPLETE", "PRUNED", "FAIL", "retry"}
    assert synced_at == ends  # every one synced as appended, and nothing else


def _loses_its_journal(name: str) -> None:
    raise JournalLost("the Optuna journal in PostgreSQL lost log 7 and any after it")


def test_a_local_worker_whose_journal_lost_logs_says_so_in_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    """A crashed PostgreSQL reaches each worker that read what it lost: one line each, not a traceback."""
    with local_workers(_loses_its_journal, 1):
        pass
    out, err = capfd.readouterr()
    assert err == "error: worker w1: the Optuna journal in PostgreSQL lost log 7 and any after it\n"
    assert "worker w1 exited with status 1" in out


def _watches_its_command(folder: Path, name: str) -> None:
    """A local worker that says when it sees its command gone; w2 then lives on until w1 has said so too."""
    while parent_alive():
        time.sleep(0.01)
    (folder / f"{name}.gone").touch()
    deadline = time.monotonic() + 30
    while name == "w2" and not (folder / "w1.gone").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def _killed_with_two_workers(folder: Path) -> None:
    """A command that starts two local workers and is killed."""
    with local_workers(functools.partial(_watches_its_command, folder), 2):
        os.kill(os.getpid(), signal.SIGKILL)


def test_each_local_worker_sees_its_command_killed_at_once(tmp_path: Path) -> None:
    """w1 watched its command through multiprocessing's pipe to it, which every process the command forked
    later holds open too: killed, the command looked alive to w1 for as long as w2 lived (a review found w1
    claiming 4 more trials of a `--workers 3` run after the kill)."""
    command = multiprocessing.get_context("fork").Process(target=_killed_with_two_workers, args=(tmp_path,))
    command.start()
    # not `join`: it waits for the end of a pipe that the workers, forked from the command, hold open too
    wait_for(lambda: psutil.Process(command.pid).status() == psutil.STATUS_ZOMBIE, 30, "the command's kill")
    wait_for(lambda: {f.name for f in tmp_path.iterdir()} == {"w1.gone", "w2.gone"}, 10,
             "both workers to see their command gone")
    command.join(30)
    assert command.exitcode == -signal.SIGKILL
