"""A tuning run killed with SIGKILL leaves its MLflow runs RUNNING (MLflow has no run heartbeat); the
next start must mark them KILLED, once their process is really gone, and say so in one line."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest
from optuna.storages.journal._storage import JournalOperation

import sentiment_mlflow_optuna
from review_sentiment.constants import MODEL_NAME, TUNING_EXPERIMENT
from review_sentiment.processes import TEMPORARY_PREFIX, ended
from review_sentiment.tracking.orphans import close_orphaned_runs
from review_sentiment.tracking.publisher import NAME as PUBLISHER
from review_sentiment.tracking.records import Decision
from review_sentiment.tracking.registry import current_champion
from tests.helpers import FAST, PROJECT_DIR, Store, run_script, wait_for


def runs() -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[TUNING_EXPERIMENT])


def trials_after(header: str, lines: list[str]) -> int:
    """Trial lines printed since the study's header (the header itself names "trials" too)."""
    started = [i for i, line in enumerate(lines) if line.startswith(header)]
    return sum(line.startswith("  trial") for line in lines[started[-1]:]) if started else 0


def test_a_run_killed_mid_study_is_closed_by_the_next_start(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    temporary = store.path / "tmp"  # where the command's processes make their temporary files
    temporary.mkdir()
    tuning = subprocess.Popen(
        [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--trials", "40", "--folds", "3"],
        cwd=store.path, env=dict(os.environ, MLFLOW_TRACKING_URI=store.uri, TMPDIR=str(temporary)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(tuning.stdout), daemon=True).start()
    try:
        wait_for(lambda: tuning.poll() is not None or "NaiveBayes: 40 trials" in "".join(lines), 180,
                 "the second family's study to start")
        wait_for(lambda: tuning.poll() is not None or trials_after("NaiveBayes: 40 trials", lines) >= 3,
                 60, "a few of its trials")
        assert tuning.poll() is None, "".join(lines)
        # frozen there (SIGSTOP), mid-study: on a slow machine its 40 fast trials could finish during the checks
        # below (the other command imports and loads the file); a stopped process is still alive, holding its lock
        psutil.Process(tuning.pid).suspend()
        assert close_orphaned_runs(TUNING_EXPERIMENT) == []  # its process is alive: not an orphan
        assert sentiment_mlflow_optuna.main(["--trials", "40", "--folds", "3"]) == 2  # started twice: refused
    finally:
        writer = psutil.Process(tuning.pid).children() if tuning.poll() is None else []  # they outlive the command
        tuning.kill()  # SIGKILL: no cleanup of any kind
        tuning.wait()
    # they end after the publication the publisher may be in (the model it was handed, in a nameless file;
    # its own temporary files, cleaned up as it finishes): then none is left
    wait_for(lambda: all(ended(process) for process in writer), 60, "the writer and the publisher to end")
    # the command's own folder of temporary files, with what it held when killed: the next start removes it
    assert [f.name.startswith(TEMPORARY_PREFIX) for f in temporary.iterdir()] == [True]
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # the next commands, run here, start there too
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
    assert not any(temporary.iterdir())

    # The killed command itself, run again, resumes its studies (in optuna.journal beside mlflow.db) and
    # finishes the same parent runs: only the trials it had not finished run now.
    resumed = run_script(["--trials", "40", "--folds", "3"])
    # the first family's version: recorded before the kill (once the publisher had published it), found as the
    # publisher registered it, or published now (after the other command's v1)
    assert re.search(r"LogisticRegression: (study complete and registered as v1 before the restart|best CV F1 \S+, "
                     r"test F1 \S+ -> FlipkartSentimentModel v[12]\b)", resumed), resumed
    finished_before = int(resumed.split("NaiveBayes: 40 trials, 3-fold CV, resuming: ")[1].split()[0])
    assert finished_before >= 3
    assert trials_after("NaiveBayes: 40 trials", resumed.splitlines()) == 40 - finished_before + 40  # and LinearSVM
    final = runs().set_index("run_id")
    assert set(final.loc[parents.run_id, "status"]) == {"FINISHED"} and "RUNNING" not in set(final.status)
    children = final[final["tags.mlflow.parentRunId"] == parents.run_id["NaiveBayes"]]
    assert len(children) == 40


def trials_made(journal: Path) -> int:
    """Trials created in an Optuna journal file (whole lines only: a killed writer may leave a torn one)."""
    lines = journal.read_text().splitlines(keepends=True)
    return sum(json.loads(line)["op_code"] == JournalOperation.CREATE_TRIAL for line in lines if line.endswith("\n"))


@pytest.mark.parametrize("workers", [2, 3])
def test_a_command_killed_with_workers_leaves_its_store_closed(store: Store, workers: int) -> None:
    """SIGKILL the command alone mid-run: its workers, writer and publisher end on their own, each closing its
    connections to the SQLite store, so that the last to close one leaves the store whole in its one file
    (no -wal or -shm file beside it). Each worker runs at most one more trial (the one it is running, or
    one it claims while the killed command is still ending) and claims no more (w1 went on tuning the
    rest of the studies for a run that was gone). That w1 does not wait for w2 to end first:
    `test_each_local_worker_sees_its_command_killed_at_once`."""
    command = [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), *FAST, "--workers", str(workers)]
    tuning = subprocess.Popen(command, cwd=store.path, env=dict(os.environ, MLFLOW_TRACKING_URI=store.uri),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert tuning.stdout is not None
    printed, left, stopped = [], [], []
    for line in tuning.stdout:
        printed.append(line)
        if " NaiveBayes]" in line:  # a trial of the second family: the first family's model handed over
            left = psutil.Process(tuning.pid).children()
            stopped = [p for p in left if re.fullmatch(r"w\d", p.name())]
            for worker in stopped:
                worker.suspend()  # SIGSTOP: what each claimed by the kill is in the journal, counted below
            tuning.kill()
            break
    tuning.wait()
    journal = store.path / "optuna.journal"
    try:
        assert {p.name() for p in left} >= {PUBLISHER} and len(stopped) == workers - 1, "".join(printed)
        claimed = trials_made(journal)
    finally:
        for worker in stopped:
            worker.resume()  # even when the test fails: stopped, a worker never sees its command gone
    wait_for(lambda: all(ended(process) for process in left), 60, "the workers, the writer and the publisher to end")
    after = tuning.stdout.read()  # the workers printed on the same pipe: a few lines, all of them ended
    # at most the claim each may have been making as it was stopped; they ran the rest of the studies before
    assert trials_made(journal) <= claimed + len(stopped), "".join(printed) + after
    assert after.count("the run that started it is gone: claimed no more") == len(stopped), after
    assert sorted(f.name for f in store.path.iterdir() if f.name.startswith("mlflow.db")) == ["mlflow.db"]


def killed_right_after(marker: str, command: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run `command` and SIGKILL it (its process group: a temporary Prefect server dies with it) the moment
    it prints `marker`; what it printed."""
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL, "".join(lines)
    return "".join(lines)


def undecided(name: str = MODEL_NAME) -> list[str]:
    versions = mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    return [str(v.version) for v in versions if Decision.of(v) is None]


def test_a_retrain_killed_right_after_registering_gets_its_decision_and_its_flow_run_is_crashed(
        store: Store, tmp_path: Path) -> None:
    env = dict(os.environ, MLFLOW_TRACKING_URI=store.uri, PREFECT_HOME=str(tmp_path / "prefect"))
    once = [sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "retrain"]
    printed = killed_right_after("Created version '1'", once, env, store.path)
    assert undecided() == ["1"] and current_champion(MODEL_NAME) is None, printed

    rerun = subprocess.run(once, cwd=store.path, env=env, capture_output=True, text=True, timeout=300)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert "Decided v1, registered by a command that did not finish: v1 is the first champion" in out, out[-3000:]
    assert re.search(r"Marked Crashed flow run \S+ \([0-9a-f-]+\): its process \d+ is gone", out), out[-3000:]
    assert "Retrain skipped: data, code and parameters unchanged: identical to v1" in out, out[-3000:]
    assert undecided() == [] and str(current_champion(MODEL_NAME).version) == "1"


def test_a_family_whose_version_was_recorded_is_not_redone_after_a_kill(store: Store) -> None:
    """Killed (with its writer and publisher) once the first family's version is recorded in its study, the command run
    again goes straight to the families after it."""
    command = FAST + ["--models", "LogisticRegression", "NaiveBayes"]
    tuning = [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), *command]
    killed_right_after("LogisticRegression: best CV F1", tuning, dict(os.environ, MLFLOW_TRACKING_URI=store.uri),
                       store.path)
    again = run_script(command)
    assert "LogisticRegression: study complete and registered as v1 before the restart" in again, again
    assert sorted(str(v.version) for v in mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")) == [
        "1", "2"]


def test_a_tuning_run_killed_right_after_registering_gets_its_decision_from_the_same_command(store: Store) -> None:
    env = dict(os.environ, MLFLOW_TRACKING_URI=store.uri)
    command = FAST + ["--models", "LogisticRegression", "NaiveBayes"]
    tuning = [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), *command]
    printed = killed_right_after("Created version '1'", tuning, env, store.path)
    assert undecided() == ["1"], printed
    again = run_script(command)  # resumes: v1 is found (as registered, or as the identical model), not redone
    assert re.search(r"LogisticRegression: study complete and registered as v1 before the restart|"
                     r"-> FlipkartSentimentModel v1 \(identical to v1, registered before: reused\)", again), again
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")) == 2  # no duplicate of v1
    assert undecided() == [] and current_champion(MODEL_NAME) is not None


@pytest.mark.parametrize("marker", ["its model is published beside", "Created version '1'"],
                         ids=["before it publishes", "right after it registers"])
def test_a_publisher_killed_with_a_model_to_publish_costs_the_run_nothing(store: Store, marker: str) -> None:
    """SIGKILL the command's publisher process the moment it is handed the first model, or right after it has
    registered it: the command publishes what the publisher did not and finds what it registered (no version
    twice); the child runs are all written. What the publisher was staging is removed (by the command)."""
    temporary = store.path / "tmp"  # where the command's processes make their temporary files
    temporary.mkdir()
    command = [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), *FAST,
               "--models", "LogisticRegression", "NaiveBayes"]
    tuning = subprocess.Popen(command, cwd=store.path,
                              env=dict(os.environ, MLFLOW_TRACKING_URI=store.uri, TMPDIR=str(temporary)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert tuning.stdout is not None
    printed = []
    for line in tuning.stdout:
        printed.append(line)
        if marker in line:
            publisher, = (p for p in psutil.Process(tuning.pid).children() if p.name() == PUBLISHER)
            publisher.kill()
            publisher.wait(10)
            break
    printed.append(tuning.stdout.read())
    assert tuning.wait(120) == 0 and marker in "".join(printed), "".join(printed)
    assert list(temporary.iterdir()) == []

    versions = mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"] and undecided() == [], "".join(printed)
    parents = runs()[lambda r: r["tags.mlflow.parentRunId"].isna()].set_index("tags.mlflow.runName")
    assert set(parents.status) == {"FINISHED"} and "RUNNING" not in set(runs().status)
    client = mlflow.MlflowClient()
    for family, parent in parents.iterrows():
        files = {a.path for a in client.list_artifacts(parent.run_id)}
        assert {"confusion_matrix.png", "reliability_diagram.png"} <= files, (family, files)
        assert parent["metrics.model_size_bytes"] > 0, family
        children = runs()[lambda r, run_id=parent.run_id: r["tags.mlflow.parentRunId"] == run_id]
        assert sorted(children["tags.number"].astype(int)) == list(range(6)), family


@pytest.mark.parametrize("moment", ["  trial   2", "its model is published beside"],
                         ids=["during the first trials", "as the first model is handed over"])
def test_a_ctrl_c_takes_back_the_run_and_says_so_in_a_line(store: Store, tmp_path: Path, moment: str) -> None:
    """Ctrl-C in a terminal reaches the command's whole process group: the run takes back all it wrote
    (runs, versions, studies), its processes end, nothing is left in TMPDIR, and it says so in one line
    with the status a shell gives a process Ctrl-C ended (130), not a traceback."""
    temporary = store.path / "tmp"
    temporary.mkdir()
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        tuning = subprocess.Popen(
            [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), *FAST], cwd=store.path,
            env=dict(os.environ, MLFLOW_TRACKING_URI=store.uri, TMPDIR=str(temporary)), stdout=subprocess.PIPE,
            stderr=stderr, text=True, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal starts it
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(tuning.stdout), daemon=True).start()
    wait_for(lambda: tuning.poll() is not None or moment in "".join(lines), 120, repr(moment))
    assert tuning.poll() is None, "".join(lines)
    group = [psutil.Process(tuning.pid), *psutil.Process(tuning.pid).children()]
    os.killpg(tuning.pid, signal.SIGINT)
    assert tuning.wait(120) == 130
    wait_for(lambda: all(ended(process) for process in group), 30, "the command's processes to end")
    said = errors.read_text()
    assert said.splitlines()[-1] == "interrupted (Ctrl-C)" and "Traceback" not in said, said
    assert runs().empty  # every run it made is in the trash
    assert mlflow.MlflowClient().search_model_versions("") == []
    assert list(temporary.iterdir()) == []
