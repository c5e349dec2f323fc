"""A tuning run killed with SIGKILL leaves its MLflow runs RUNNING (MLflow has no run heartbeat); the
next start must mark them KILLED, once their process is really gone, and say so in one line."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import mlflow
import pandas as pd

import sentiment_mlflow_optuna
from review_sentiment.constants import TUNING_EXPERIMENT
from review_sentiment.tracking.orphans import close_orphaned_runs
from tests.helpers import FAST, PROJECT_DIR, Store, run_script, wait_for


def runs() -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[TUNING_EXPERIMENT])


def trials_after(header: str, lines: list[str]) -> int:
    """Trial lines printed since the study's header (the header itself names "trials" too)."""
    started = [i for i, line in enumerate(lines) if line.startswith(header)]
    return sum(line.startswith("  trial") for line in lines[started[-1]:]) if started else 0


def test_a_run_killed_mid_study_is_closed_by_the_next_start(store: Store) -> None:
    tuning = subprocess.Popen(
        [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--trials", "40", "--folds", "3"],
        cwd=store.path, env=dict(os.environ, MLFLOW_TRACKING_URI=store.uri), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(tuning.stdout), daemon=True).start()
    try:
        wait_for(lambda: tuning.poll() is not None or "NaiveBayes: 40 trials" in "".join(lines), 180,
                 "the second family's study to start")
        wait_for(lambda: tuning.poll() is not None or trials_after("NaiveBayes: ", lines) >= 3,
                 60, "a few of its trials")
        assert tuning.poll() is None, "".join(lines)
        assert close_orphaned_runs(TUNING_EXPERIMENT) == []  # its process is alive: not an orphan
        assert sentiment_mlflow_optuna.main(["--trials", "40", "--folds", "3"]) == 2  # started twice: refused
    finally:
        tuning.kill()  # SIGKILL: no cleanup of any kind
        tuning.wait()
    left = runs()
    parents = left[left["tags.mlflow.parentRunId"].isna()].set_index("tags.mlflow.runName")
    # what a kill leaves behind: the runs of the family being tuned and of the one after it (made up front)
    assert parents.status.to_dict() == {"LogisticRegression": "FINISHED", "NaiveBayes": "RUNNING",
                                        "LinearSVM": "RUNNING"}

    output = run_script(FAST + ["--models", "LogisticRegression"])  # another command: it closes them
    closed = [line for line in output.splitlines() if line.startswith("Marked KILLED")]
    # the kill may land while a finished trial's child run is being written (create, batch, terminate):
    # that child run is closed with its parent, and the resume below replaces it
    assert closed in ([f"Marked KILLED 2 runs left RUNNING by a process that is gone: "
                       f"LinearSVM ({parents.run_id['LinearSVM'][:8]}, pid {tuning.pid}, 0 child runs); "
                       f"NaiveBayes ({parents.run_id['NaiveBayes'][:8]}, pid {tuning.pid}, {children})"]
                      for children in ("0 child runs", "1 child run")), output
    after = runs().set_index("run_id")
    assert set(after.loc[parents.run_id[["NaiveBayes", "LinearSVM"]], "status"]) == {"KILLED"}
    assert "RUNNING" not in set(after.status)
    assert "Marked KILLED" not in run_script(FAST + ["--models", "LogisticRegression"])  # nothing left to close

    # The killed command itself, run again, resumes its studies (in optuna.db beside mlflow.db) and
    # finishes the same parent runs: only the trials it had not finished run now.
    resumed = run_script(["--trials", "40", "--folds", "3"])
    assert "LogisticRegression: study complete and registered as v1 before the restart" in resumed, resumed
    finished_before = int(resumed.split("NaiveBayes: 40 trials, 3-fold CV, resuming: ")[1].split()[0])
    assert finished_before >= 3
    assert trials_after("NaiveBayes: ", resumed.splitlines()) == 40 - finished_before + 40  # NaiveBayes + LinearSVM
    final = runs().set_index("run_id")
    assert set(final.loc[parents.run_id, "status"]) == {"FINISHED"} and "RUNNING" not in set(final.status)
    children = final[final["tags.mlflow.parentRunId"] == parents.run_id["NaiveBayes"]]
    assert len(children) == 40
