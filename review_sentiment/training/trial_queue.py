"""Workers take a study's trials from a queue, so that N workers run exactly `--trials` trials together.

The study records its budget of trials (`set_trial_budget`). A worker claims a trial under a lock
(`_claiming`): a trial queued again because its worker died if there is one, else a new one
while the budget lasts (queued, as `enqueue_trial` with no fixed parameters does: the sampler picks
them all), moved from WAITING to RUNNING. Trials are queued one at a time, as they are claimed, not
all up front: Optuna re-reads every unfinished trial on each read of a study (the sampler's, the
pruner's), and 40 queued trials made those reads ~30 ms of every trial on SQLite. A worker stops when
the budget is spent and nothing waits. `study.optimize` cannot be used for this: it would create
trials past the budget when workers finish together. The loop below is Optuna's own trial loop
(stale-trial check, heartbeat, tell) on a claimed trial instead.

A worker killed mid-trial leaves its trial RUNNING without heartbeats: the next worker that looks
marks it failed and Optuna's `RetryFailedTrialCallback` queues its configuration again (a retry, which
the budget does not count).
"""
from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState, create_trial

from review_sentiment.processes import exclusive_file_lock
from review_sentiment.training.journal import RETRY, FileJournal
from review_sentiment.training.study import Storage

log = logging.getLogger(__name__)
TrialDone = Callable[[optuna.Study, FrozenTrial], None]
WORKER = "worker"  # the user attribute naming the worker that ran a trial
BUDGET = "trial_budget"  # the study's user attribute: how many trials its workers run together
CLAIM_LOCK = 0x5E47  # with the study id, the key of PostgreSQL's advisory lock on a study's claims


def set_trial_budget(study: optuna.Study, count: int) -> None:
    study.set_user_attr(BUDGET, count)


def run_queued_trials(storage: Storage, study: optuna.Study, objective: Callable[[optuna.Trial], float],
                      failures: tuple[type[Exception], ...], worker: str, on_done: TrialDone,
                      go_on: Callable[[], bool] = lambda: True) -> int:
    """Run the study's trials until none is waiting and its budget is spent, or `go_on` says no before a
    claim; return how many this worker ran. Each trial records its `worker`. An exception in `failures`
    fails its trial and the study goes on; any other leaves the trial to the heartbeat check (it is queued
    again when a worker runs this study next)."""
    ran = 0
    study_id = storage.get_study_id_from_name(study.study_name)
    budget = study.user_attrs.get(BUDGET, 0)  # none: a study of an earlier release, its trials all queued
    while go_on() and (trial := _claim(storage, study, study_id, budget)) is not None:
        trial.set_user_attr(WORKER, worker)
        with _heartbeat(storage, trial._trial_id):
            try:
                done = study.tell(trial, objective(trial))
            except optuna.TrialPruned:
                done = study.tell(trial, state=TrialState.PRUNED)
            except failures:
                done = study.tell(trial, state=TrialState.FAIL)
            except (UpdateFinishedTrialError, ValueError) as err:
                if not storage.get_trial(trial._trial_id).state.is_finished():
                    raise
                log.warning("trial %d was failed as stale while it ran (%s); its retry runs it", trial.number, err)
                continue
        on_done(study, done)
        ran += 1
    return ran


def finished_by_workers(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that ran to an end on their worker: not those failed by the heartbeat check because their
    worker died (each of those was queued again as a new trial)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        died = {number for trial in study.get_trials(deepcopy=False)
                for number in RetryFailedTrialCallback.retry_history(trial)}
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                   TrialState.FAIL)) if t.number not in died]


def unfinished(study: optuna.Study) -> list[FrozenTrial]:
    """Trials queued or running anywhere: once `run_queued_trials` has found none left to claim, the study
    is complete when there are none (before that, its budget may still hold trials not yet queued)."""
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _claim(storage: Storage, study: optuna.Study, study_id: int, budget: int) -> optuna.Trial | None:
    with _claiming(storage, study_id):
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)  # Optuna's cache: re-reads only trials unfinished when last read
        trial_id = _claimed_id(storage, study, study_id, trials, budget)
    if trial_id is None:
        return None
    # The trial's sampler and pruner see the study as this claim read it, where `study.ask` clears Optuna's
    # per-thread copy and they read it again moments later: one read of the study fewer a trial (~4 ms).
    study._thread_local.cached_all_trials = trials
    return optuna.Trial(study, trial_id)


def _claimed_id(storage: Storage, study: optuna.Study, study_id: int, trials: list[FrozenTrial],
                budget: int) -> int | None:
    """Under the claim lock: a WAITING trial (queued again after its worker died, or queued by a worker killed
    before it claimed it), else a new one while the budget lasts, moved to RUNNING; None when neither is left."""
    for trial_id in [trial._trial_id for trial in trials if trial.state == TrialState.WAITING]:
        if _run(storage, trial_id):
            return trial_id
    if sum(RETRY not in trial.system_attrs for trial in trials) >= budget:
        return None
    # queued through the study's own storage, so that Optuna's cache knows the trial without reading it
    trial_id = study._storage.create_new_trial(study_id, create_trial(state=TrialState.WAITING,
                                                                      system_attrs={"fixed_params": {}}))
    return trial_id if _run(storage, trial_id) else None


def _run(storage: Storage, trial_id: int) -> bool:
    """Move a WAITING trial to RUNNING; False if it is no longer waiting. The heartbeat first: Optuna never
    fails a RUNNING trial without one as stale, so a worker killed between the two writes in the other order
    left a trial every later worker waited for forever. This way a kill between them leaves the trial
    WAITING (a heartbeat on it is ignored)."""
    try:
        storage.record_heartbeat(trial_id)
        return storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
    except UpdateFinishedTrialError:  # finished by another worker between the read and the claim
        return False


@contextmanager
def _claiming(storage: Storage, study_id: int) -> Iterator[None]:
    """Claims one worker at a time, so that two never queue the budget's last trial twice or take the same
    one. PostgreSQL: a transaction's advisory lock per study, for workers on any machine; the server ends
    the session of a holder that stays idle for 30 s (a lost machine), so its lock cannot stall the others.
    SQLite or a journal file: an exclusive `flock` beside the file, whose workers are on one machine; one lock for
    all its studies. Both end with their holder's process."""
    where = _claimed_in(storage)
    if isinstance(where, Path):
        with exclusive_file_lock(Path(f"{where}.claims")):
            yield
        return
    with where.begin() as connection:
        connection.execute(sqlalchemy.text("SET LOCAL idle_in_transaction_session_timeout = '30s'"))
        connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:lock, :study)"),
                           {"lock": CLAIM_LOCK, "study": study_id})
        yield


def _claimed_in(storage: Storage) -> sqlalchemy.Engine | Path:
    """The PostgreSQL database claims take turns in, or the file (SQLite, journal) beside which they do."""
    if isinstance(storage, RDBStorage):
        return storage.engine if storage.engine.dialect.name == "postgresql" else Path(str(storage.engine.url.database))
    return storage.backend.path if isinstance(storage.backend, FileJournal) else storage.backend.engine


@contextmanager
def _heartbeat(storage: Storage, trial_id: int) -> Iterator[None]:
    """Record a heartbeat for the trial now and every interval until the block ends."""
    stop = threading.Event()
    interval = storage.get_heartbeat_interval()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # noqa: BLE001 — a missed beat is retried; a dead thread would fail the trial
                log.warning("heartbeat of trial %d not recorded: %s", trial_id, err)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
