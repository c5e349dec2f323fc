"""`ml_orchestration_flipkart.py score` as a user runs it: path mistakes are one line and exit 2,
before a Prefect API is started, retried or anything is written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ml_orchestration_flipkart
from tests.helpers import PROJECT_DIR, nothing_was_written


@pytest.mark.parametrize("output, message", [
    ("missing/preds.csv", "missing: no such folder for --output"),
    ("{input}", "--output is the input file; write the predictions elsewhere"),
    (".", "is a folder; --output names the CSV file to write"),
    ("preds.csv", "nope.csv: file not found"),
], ids=["missing folder", "output is input", "output is a folder", "missing input"])
def test_path_mistakes_are_one_line_and_change_nothing(reviews_to_score: Path, output: str, message: str,
                                                       capsys: pytest.CaptureFixture) -> None:
    source = "nope.csv" if "nope" in message else str(reviews_to_score)
    args = ["score", "--input", source, "--output", output.format(input=reviews_to_score)]
    assert ml_orchestration_flipkart.main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and message in captured.err and captured.err.count("\n") == 1
    assert nothing_was_written(reviews_to_score.parent, reviews_to_score)


def test_monitor_without_a_prediction_log_is_one_line_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert ml_orchestration_flipkart.main(["monitor", "--once", "--prediction-log", "nope.db"]) == 2
    assert capsys.readouterr().err == ("error: nope.db: no prediction log here (start the service, or pass "
                                       "--prediction-log)\n")
    assert list(tmp_path.iterdir()) == []


def test_a_work_pool_without_a_prefect_server_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--work-pool", "p"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == (
        "error: a work pool lives on a Prefect server: set PREFECT_API_URL (e.g. `python stack.py up`, then export "
        "what it prints)\n"), done.stderr
