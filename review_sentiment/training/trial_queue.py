"""Workers take a study's trials from a queue, so that N workers run exactly `--trials` trials together.

The tuning run queues its trials up front (`enqueue_trial` with no fixed parameters: the sampler
still picks them all). A worker claims one queued trial by moving it from WAITING to RUNNING, which
the storage does atomically (two workers never get the same trial), and stops when none is left.
`study.optimize` cannot be used for this: when the queue is empty it creates a new trial, so
workers finishing together would overshoot the budget. The loop below is Optuna's own trial loop
(stale-trial check, heartbeat, tell) on a claimed trial instead.

A worker killed mid-trial leaves its trial RUNNING without heartbeats: the next worker that looks
marks it failed and Optuna's `RetryFailedTrialCallback` queues its configuration again.
"""
from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from review_sentiment.processes import exclusive_file_lock

log = logging.getLogger(__name__)
TrialDone = Callable[[optuna.Study, FrozenTrial], None]
WORKER = "worker"  # the user attribute naming the worker that ran a trial


def queue_trials(study: optuna.Study, count: int) -> None:
    for _ in range(count):
        study.enqueue_trial({})


def run_queued_trials(storage: RDBStorage, study: optuna.Study, objective: Callable[[optuna.Trial], float],
                      failures: tuple[type[Exception], ...], worker: str, on_done: TrialDone) -> int:
    """Run queued trials until the queue is empty; return how many this worker ran. Each trial records
    its `worker`. An exception in `failures` fails its trial and the study goes on; any other leaves
    the trial to the heartbeat check (it is queued again when a worker runs this study next)."""
    ran = 0
    study_id = storage.get_study_id_from_name(study.study_name)
    while (trial := _claim(storage, study, study_id)) is not None:
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
    """Trials queued or running anywhere: the study is complete when there are none."""
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _claim(storage: RDBStorage, study: optuna.Study, study_id: int) -> optuna.Trial | None:
    with _claiming(storage):
        fail_stale_trials(study)
        for waiting in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
            try:
                # The heartbeat first: Optuna never fails a RUNNING trial without one as stale, so a worker
                # killed between the two writes in the other order left a trial every later worker waited for
                # forever. This way a kill between them leaves the trial WAITING (a heartbeat on it is ignored).
                storage.record_heartbeat(waiting._trial_id)
                if storage.set_trial_state_values(waiting._trial_id, state=TrialState.RUNNING):
                    return optuna.Trial(study, waiting._trial_id)
            except UpdateFinishedTrialError:  # finished by another worker between the read and the claim
                continue
    return None


@contextmanager
def _claiming(storage: RDBStorage) -> Iterator[None]:
    """Claims one worker at a time. PostgreSQL makes a claim atomic by itself (Optuna reads the trial
    FOR UPDATE); SQLite ignores FOR UPDATE, and two workers claimed the same trial (seen: one then
    failed with UpdateFinishedTrialError), or both requeued one dead worker's trial. An SQLite file has
    its workers on one machine, so an exclusive `flock` beside it serialises their claims."""
    if storage.engine.dialect.name != "sqlite":
        yield
        return
    with exclusive_file_lock(Path(f"{storage.engine.url.database}.claims")):
        yield


@contextmanager
def _heartbeat(storage: RDBStorage, trial_id: int) -> Iterator[None]:
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
