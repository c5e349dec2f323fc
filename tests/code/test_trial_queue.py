"""The worker's trial loop against Optuna's own: `trial_queue` claims queued trials by their storage id
(Optuna's private `_trial_id`) and runs Optuna's stale check, heartbeat and tell itself. The tests named
test_pinned_* must pass before the optuna pin moves."""
from __future__ import annotations

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
