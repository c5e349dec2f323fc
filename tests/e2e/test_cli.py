"""The orchestration CLI as a user's shell meets it: a process, its exit status, its whole output."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import psutil

from tests.helpers import PROJECT_DIR, nothing_was_written


def test_scoring_into_its_own_input_is_refused_by_the_real_cli(reviews_to_score: Path) -> None:
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "score",
                           "--input", str(reviews_to_score), "--output", str(reviews_to_score)],
                          cwd=reviews_to_score.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout == "" and done.stderr == (f"error: {reviews_to_score}: --output is the input file; "
                                                 f"write the predictions elsewhere\n")
    assert nothing_was_written(reviews_to_score.parent, reviews_to_score)


def test_a_refused_join_leaves_no_store_and_no_writer_behind(tmp_path: Path) -> None:
    """`--join` with no run to join is refused in one line. Its child-run writer process, making the new
    store ahead meanwhile, is ended without putting it in place; no journal is made either."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPTUNA_"))}  # MLflow's default
    with subprocess.Popen([sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--join"], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as command:
        stdout, stderr = command.communicate(timeout=120)
    assert command.returncode == 2, stdout[-2000:] + stderr[-2000:]
    assert stderr.startswith("error: no unfinished tuning run") and stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # no store, nor the one made ahead, nor an empty journal
    assert not [p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[-3:-1] == [
        "review_sentiment.tracking.trial_writer", str(command.pid)]]  # the writer ended with it


def test_a_finished_command_leaves_its_sqlite_files_whole_and_alone(tmp_path: Path) -> None:
    """The command ends without tearing down its objects (`cli.end_now`): MLflow's store and Optuna's
    SQLite storage are closed before it, so their last commits are in the files themselves, with no
    `-wal` or `-shm` file beside them (copying `mlflow.db` alone copies everything)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPTUNA_"))}
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--trials", "3",
                           "--folds", "3", "--models", "NaiveBayes", "--storage", "sqlite:///optuna.db"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.rstrip().splitlines()[-1].startswith("Champion: models:/FlipkartSentimentModel@champion = v1")
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(("-wal", "-shm", "-journal"))]
    copies = tmp_path / "copies"
    copies.mkdir()
    for database, table, rows in (("mlflow.db", "model_versions", 1), ("optuna.db", "trials", 3)):
        shutil.copy(tmp_path / database, copies / database)  # the file alone, as a user would copy it
        with closing(sqlite3.connect(copies / database)) as db:
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == rows
