"""The worker's trial loop against Optuna's own: `trial_queue` claims queued trials by their storage id
(Optuna's private `_trial_id`) and runs Optuna's stale check, heartbeat and tell itself. The tests named
test_pinned_* must pass before the optuna pin moves."""
from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from review_sentiment.training.trial_queue import queue_trials, run_queued_trials, unfinished


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    if x > 8:
        raise optuna.TrialPruned()
    return (x - 2) ** 2 + trial.suggest_int("n", 0, 3)


def study_in(path: Path) -> tuple[RDBStorage, optuna.Study]:
    storage = RDBStorage(f"sqlite:///{path}", heartbeat_interval=60, grace_period=120)
    return storage, optuna.create_study(storage=storage, sampler=optuna.samplers.TPESampler(seed=3),
                                        study_name="s")


def test_pinned_claimed_trials_run_as_optunas_own_loop_runs_them(tmp_path: Path) -> None:
    storage, ours = study_in(tmp_path / "ours.db")
    queue_trials(ours, 25)
    done: list[int] = []
    assert run_queued_trials(storage, ours, objective, (), "w0", lambda _, t: done.append(t.number)) == 25
    _, optunas = study_in(tmp_path / "optunas.db")
    optunas.optimize(objective, n_trials=25)

    assert done == list(range(25)) and unfinished(ours) == []
    assert [(t.number, t.state, t.params, t.value) for t in ours.trials] == [
        (t.number, t.state, t.params, t.value) for t in optunas.trials]  # same sampler draws, same outcomes
    assert {t.state for t in ours.trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    assert all(t.user_attrs["worker"] == "w0" and t._trial_id == storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("s"), t.number) for t in ours.trials)


def _claim_and_die_after_its_first_write(path: str) -> None:
    """A worker SIGKILLed at the worst moment of a claim: right after its first write to the storage."""
    storage = RDBStorage(f"sqlite:///{path}", heartbeat_interval=60, grace_period=120)

    def then_die(write: Callable[..., object]) -> Callable[..., None]:
        def written_then_dead(*args: object, **kwargs: object) -> None:
            write(*args, **kwargs)
            os._exit(9)  # no cleanup of any kind
        return written_then_dead

    storage.set_trial_state_values = then_die(storage.set_trial_state_values)  # type: ignore[method-assign]
    storage.record_heartbeat = then_die(storage.record_heartbeat)  # type: ignore[method-assign]
    run_queued_trials(storage, optuna.load_study(study_name="s", storage=storage), objective, (), "dies",
                      lambda *_: None)


def test_a_worker_killed_mid_claim_leaves_no_trial_the_study_waits_for_forever(tmp_path: Path) -> None:
    """Optuna fails a RUNNING trial as stale only once it has a heartbeat: a claim that set RUNNING first and
    died before its heartbeat left a trial every later worker waited for, forever (a resume hung in CI)."""
    storage, study = study_in(tmp_path / "s.db")
    queue_trials(study, 3)
    dying = multiprocessing.get_context("fork").Process(target=_claim_and_die_after_its_first_write,
                                                        args=(str(tmp_path / "s.db"),))
    dying.start()
    dying.join(60)
    assert dying.exitcode == 9
    assert run_queued_trials(storage, study, objective, (), "next", lambda *_: None) == 3
    assert unfinished(study) == []
