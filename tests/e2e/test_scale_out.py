"""Tuning on the shared stack: workers in separate folders that share only URLs finish one study;
a worker killed with SIGKILL costs the study nothing; a killed tuning command resumes where it stopped."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from review_sentiment.orchestration.stack import StackState
from review_sentiment.training.study import GRACE_SECONDS, open_storage
from review_sentiment.training.trial_queue import finished_by_workers
from tests.e2e.conftest import stack_env
from tests.helpers import PROJECT_DIR, wait_for


@dataclass
class Tuning:
    """`python sentiment_mlflow_optuna.py` as a real process in a folder of its own, its output collected."""

    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, folder: Path, env: dict[str, str], *args: str) -> Tuning:
        folder.mkdir(exist_ok=True)
        process = subprocess.Popen([sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), *args],
                                   cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
        tuning = cls(process)
        tuning.reader = threading.Thread(target=lambda: tuning.lines.extend(process.stdout), daemon=True)
        tuning.reader.start()
        return tuning

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def trial_lines(self, tag: str = "") -> list[str]:
        """Progress lines of trials, those whose [worker family] tag contains `tag` if given."""
        return [line for line in self.lines if line.startswith("  trial") and tag in line]

    def finish(self, timeout: float = 300) -> str:
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        assert self.process.returncode == 0, self.output
        return self.output


@pytest.fixture(scope="module")
def reviews(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated reviews: enough that a trial takes long enough for a second worker to get some."""
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    subprocess.run([sys.executable, str(PROJECT_DIR / "data" / "make_sample_reviews.py"), "--rows", "4000",
                    "--seed", "12", "--out", str(path)], check=True, capture_output=True)
    return path


def args(reviews: Path, experiment: str, *more: str) -> list[str]:
    return ["--data", str(reviews), "--folds", "3", "--experiment", experiment, "--registered-model", experiment,
            *more]


def family_runs(experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(parent runs by family, child runs) of an experiment in the stack's tracking server."""
    runs = mlflow.search_runs(experiment_names=[experiment])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()].set_index("tags.mlflow.runName")
    return parents, runs[runs["tags.mlflow.parentRunId"].notna()]


def study_of(parent: pd.Series, state: StackState) -> optuna.Study:
    return optuna.load_study(study_name=parent["tags.optuna_study"],
                             storage=open_storage(state.environment()["OPTUNA_STORAGE"]))


def assert_complete(experiment: str, state: StackState, trials: int) -> dict[str, optuna.Study]:
    """Each family: exactly `trials` finished trials with distinct numbers, one child run each under its
    parent, nothing left RUNNING anywhere; trials failed by a dead worker are not counted (they were retried)."""
    parents, children = family_runs(experiment)
    studies = {}
    for family, parent in parents.iterrows():
        study = study_of(parent, state)
        ran = finished_by_workers(study)
        assert len(ran) == trials, (family, [(t.number, t.state) for t in study.trials])
        assert len({t.number for t in study.trials}) == len(study.trials)
        assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
        mine = children[children["tags.mlflow.parentRunId"] == parent.run_id]
        assert sorted(mine["tags.number"].astype(int)) == sorted(t.number for t in ran), family
        studies[family] = study
    everything = mlflow.search_runs(experiment_names=[experiment])
    assert set(everything.status) == {"FINISHED"}, everything.status.value_counts()
    return studies


@pytest.fixture
def tracking(stack: StackState, monkeypatch: pytest.MonkeyPatch) -> StackState:
    uri = stack.environment()["MLFLOW_TRACKING_URI"]
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # an earlier test may have set either
        monkeypatch.setenv(variable, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return stack


def test_two_workers_in_separate_folders_sharing_only_urls_finish_one_study(
        tracking: StackState, reviews: Path, tmp_path: Path) -> None:
    """The budget leaves the joining worker, which starts once the study exists and takes ~4 s to import and
    prepare, trials to claim: 40 trials (~4 s) were once all run by the first command before it joined."""
    env = stack_env(tracking)
    trials = 120
    command = args(reviews, "two-folders", "--models", "LogisticRegression", "--trials", str(trials), "--folds", "5")
    first = Tuning.start(tmp_path / "a", env, *command)
    wait_for(lambda: first.process.poll() is not None or f"LogisticRegression: {trials} trials" in first.output, 120,
             "the study to be created")
    second = Tuning.start(tmp_path / "b", env, *command, "--join", "--worker-name", "remote")
    registering = first.finish()
    joined = second.finish()
    assert "is the first champion" in registering and "Waiting up to" not in registering  # MLflow's, every time

    [study] = assert_complete("two-folders", tracking, trials=trials).values()
    assert len(study.trials) == trials  # no trial beyond the budget, none lost
    _, children = family_runs("two-folders")
    ran_by = children["tags.worker"].value_counts().to_dict()
    assert set(ran_by) == {"w0", "remote"} and sum(ran_by.values()) == trials, ran_by
    assert f"remote: ran {ran_by['remote']} LogisticRegression trials" in joined, joined
    assert len(second.trial_lines()) == ran_by["remote"] and all("[remote Log" in line for line in second.trial_lines())
    assert not list((tmp_path / "a").iterdir()) and not list((tmp_path / "b").iterdir())  # all state is on the stack


def test_a_worker_killed_mid_study_costs_the_study_nothing(tracking: StackState, reviews: Path,
                                                           tmp_path: Path) -> None:
    tuning = Tuning.start(tmp_path, stack_env(tracking),
                          *args(reviews, "killed-worker", "--models", "LogisticRegression", "--trials", "40",
                                "--workers", "2"))
    wait_for(lambda: tuning.process.poll() is not None or len(tuning.trial_lines("[w1 ")) >= 2,
             120, "the second worker's trials")
    joined = re.findall(r"w1 \(pid (\d+)\) joined", tuning.output)  # a forked worker says so first
    assert len(joined) == 1, tuning.output
    os.kill(int(joined[0]), signal.SIGKILL)
    output = tuning.finish()

    [study] = assert_complete("killed-worker", tracking, trials=40).values()
    assert "worker w1 exited with status -9: its trials were run by the others" in output
    retried = [line for line in tuning.trial_lines() if "again: its worker died" in line]
    assert len(study.trials) - 40 == len(retried) <= 1, output  # killed mid-trial (1) or between trials (0)
    if retried and "waiting for" in output:  # w0 ran out of queued trials before the dead one was queued again
        assert f"queued again {GRACE_SECONDS} s after its last heartbeat" in output


def test_a_killed_tuning_command_resumes_and_runs_only_the_trials_left(
        tracking: StackState, reviews: Path, tmp_path: Path) -> None:
    flags = ["--trials", "12", "--workers", "2", "--models", "LogisticRegression", "NaiveBayes"]
    command = args(reviews, "resumed", *flags)
    env = stack_env(tracking)
    killed = Tuning.start(tmp_path, env, *command)
    wait_for(lambda: killed.process.poll() is not None or ("its model is published beside" in killed.output and len(
        killed.trial_lines(" NaiveBayes]")) >= 3), 180, "the first family refitted and trials of the second")
    os.killpg(killed.process.pid, signal.SIGKILL)  # the command and its worker: no cleanup of any kind
    killed.process.wait()
    killed.reader.join(timeout=10)
    done_before = len(killed.trial_lines(" NaiveBayes]"))

    rerun = Tuning.start(tmp_path, env, *command)
    output = rerun.finish()
    # the first family's version: recorded before the kill, found as the publisher registered it, or published now
    assert re.search(r"LogisticRegression: (study complete and registered as v1 before the restart|best CV F1 \S+, "
                     r"test F1 \S+ -> resumed v1\b)", output), output
    resumed = next(line for line in rerun.lines if line.startswith("NaiveBayes: 12 trials"))
    finished_before = int(resumed.split("resuming: ")[1].split()[0])
    assert done_before <= finished_before <= done_before + 2  # lines printed, plus trials finished unprinted
    studies = assert_complete("resumed", tracking, trials=12)
    # only what was left: the queued trials, and again the ones the kill cut short (their heartbeat stopped)
    assert len(rerun.trial_lines()) == 12 - finished_before, output
    assert len(rerun.trial_lines("again: its worker died")) == len(studies["NaiveBayes"].trials) - 12
    parents, _ = family_runs("resumed")
    assert set(parents.status) == {"FINISHED"} and len(parents) == 2  # the same parent runs, finished

    uninterrupted = Tuning.start(tmp_path / "again", env, *args(reviews, "uninterrupted", *flags))
    uninterrupted.finish()
    champions = {name: mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
                 for name in ("resumed", "uninterrupted")}
    cv = {name: float(version.tags["cv_f1_macro"]) for name, version in champions.items()}
    print(f"champion after a kill and resume: {champions['resumed'].tags['family']} CV F1 {cv['resumed']:.4f}; "
          f"uninterrupted: {champions['uninterrupted'].tags['family']} CV F1 {cv['uninterrupted']:.4f}")
    assert abs(cv["resumed"] - cv["uninterrupted"]) < 0.02
