"""Each finished Optuna trial becomes a child run of its family's parent run, written by whichever
worker ran it, on whatever machine: only the parent run's id is needed, not an active run.

The child run is written once the trial has finished, in three calls: create it with every tag, one
batch of the params and the metric, terminate it. (Tags in the batch cost a commit of their own in
MLflow's SQL store: ~3 ms of ~21 on SQLite, measured.) So a worker killed mid-trial leaves no RUNNING
run behind; one killed within those three calls does, and the run replaces it once the study is
complete. A tuning command's process and the workers it forks send their child runs to a writer process
(`trial_writer`): the next trial does not wait for them (~18 ms a trial on SQLite, ~55 ms on an MLflow
server). It carries what optuna-integration's MLflowCallback logged (params, the metric, the trial's
tags and user attributes, which name the worker that ran it). A worker killed between finishing a
trial and logging it (or a writer that died) leaves a gap, which `log_missing_trial_runs` fills once
every family's trials are done.
"""
from __future__ import annotations

import datetime
import time

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from optuna.trial import FrozenTrial, TrialState

METRIC = "cv_f1_macro"
PARTIAL_METRIC = "partial_cv_f1"  # a pruned trial's mean over the folds it got through: not a CV F1


def log_trial_run(client: mlflow.MlflowClient, experiment_id: str, parent_run_id: str, trial: FrozenTrial,
                  direction: str) -> str:
    assert trial.datetime_start is not None and trial.datetime_complete is not None  # a finished trial
    started, ended = (int(t.timestamp() * 1000) for t in (trial.datetime_start, trial.datetime_complete))
    # named as the console numbers trials (from 1); the `number` tag keeps Optuna's (from 0)
    tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: str(trial.number + 1), "number": str(trial.number),
            "state": trial.state.name, "direction": direction,
            "datetime_start": str(trial.datetime_start), "datetime_complete": str(trial.datetime_complete),
            **{f"{name}_distribution": str(d) for name, d in trial.distributions.items()},
            **{name: str(value) for name, value in trial.user_attrs.items()}}
    run = client.create_run(experiment_id, start_time=started, tags=tags)
    metric = PARTIAL_METRIC if trial.state == TrialState.PRUNED else METRIC
    metrics = [Metric(metric, trial.value, ended, 0)] if trial.value is not None else []
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in trial.params.items()])
    status = RunStatus.FAILED if trial.state == TrialState.FAIL else RunStatus.FINISHED
    client.set_terminated(run.info.run_id, RunStatus.to_string(status), end_time=ended)
    return run.info.run_id


def log_missing_trial_runs(client: mlflow.MlflowClient, experiment_id: str, parent_run_id: str,
                           trials: list[FrozenTrial], direction: str, settle_seconds: float = 5.0) -> int:
    """Log the finished trials that have no child run: a live worker logs its trial within moments of
    finishing it, so a trial still missing `settle_seconds` after it finished lost its worker. A child
    run its worker was killed while writing (still RUNNING after that long) is replaced."""
    by_number = {str(t.number): t for t in trials}

    def settled(trial: FrozenTrial | None) -> bool:
        if trial is None:
            return False
        assert trial.datetime_complete is not None  # `trials` are finished
        return (datetime.datetime.now() - trial.datetime_complete).total_seconds() > settle_seconds

    while True:
        children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                      max_results=50_000)
        cut_short = [child for child in children if child.info.status in ("RUNNING", "KILLED")  # KILLED: by
                     and settled(by_number.get(child.data.tags.get("number", "")))]  # the orphan check, as RUNNING
        logged = {child.data.tags.get("number") for child in children if child not in cut_short}
        missing = [t for t in trials if str(t.number) not in logged]
        if all(settled(t) for t in missing):
            for child in cut_short:
                client.delete_run(child.info.run_id)
            for trial in missing:
                log_trial_run(client, experiment_id, parent_run_id, trial, direction)
            return len(missing)
        time.sleep(0.5)
