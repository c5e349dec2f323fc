"""`ml_orchestration_flipkart.py` as a user runs it: each command with its own options, the older
spellings still meaning what they meant; path mistakes are one line and exit 2, before a Prefect API
is started, retried or anything is written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ml_orchestration_flipkart
from tests.helpers import PROJECT_DIR, Store, nothing_was_written


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


@pytest.mark.e2e  # the CLI as a user starts it: a process importing Prefect
def test_a_work_pool_without_a_prefect_server_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {"PREFECT_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--work-pool", "p"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr == (
        "error: a work pool lives on a Prefect server: set PREFECT_API_URL (e.g. `python stack.py up`, then export "
        "what it prints)\n"), done.stderr


@pytest.mark.parametrize("argv, command", [
    ([], "serve"), (["serve"], "serve"), (["retrain"], "retrain"), (["monitor"], "monitor"),
    (["deploy", "--work-pool", "p"], "deploy"), (["score", "--input", "a.csv", "--output", "b.csv"], "score"),
    (["--once"], "retrain"), (["monitor", "--once"], "monitor"), (["--work-pool", "p"], "deploy"),
], ids=["no command", "serve", "retrain", "monitor", "deploy", "score", "old --once", "old monitor --once",
        "old --work-pool"])
def test_every_command_and_its_older_spelling_parse_to_one_command(argv: list[str], command: str) -> None:
    assert ml_orchestration_flipkart.parse_args(argv).command == command


@pytest.mark.parametrize("argv", [["--text-col", "Review", "score", "--input", "a.csv", "--output", "b.csv"],
                                  ["score", "--input", "a.csv", "--output", "b.csv", "--text-col", "Review"]],
                         ids=["before the command", "after it"])
def test_an_option_before_the_command_is_not_reset_by_the_commands_default(argv: list[str]) -> None:
    assert ml_orchestration_flipkart.parse_args(argv).text_col == "Review"


def test_options_given_before_and_after_the_command_both_count() -> None:
    args = ml_orchestration_flipkart.parse_args(["--prediction-log", "p.db", "--data", "d.csv", "retrain",
                                                 "--with-feedback", "--text-col", "T"])
    assert (args.command, args.prediction_log, args.data, args.with_feedback, args.text_col) == (
        "retrain", "p.db", "d.csv", True, "T")


@pytest.mark.parametrize("command", ["serve", "retrain", "monitor", "score", "deploy"])
def test_every_command_has_its_own_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        ml_orchestration_flipkart.parse_args([command, "--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0 and f" {command} [-h]" in shown
    assert all(option in shown for option in {"score": ["--input", "--text-col"], "monitor": ["--no-retrain"],
                                               "deploy": ["--work-pool", "--cron"]}.get(command, ["--data"]))


def test_a_csv_that_does_not_parse_is_one_line_before_any_flow_runs(store: Store, capfd: pytest.CaptureFixture) -> None:
    bad = store.path / "bad.csv"
    bad.write_text('Review text,Ratings\n"good,5\nbad,1\n')
    assert ml_orchestration_flipkart.main(["retrain", "--data", str(bad)]) == 2
    out, err = capfd.readouterr()
    assert "ERROR" not in out + err and "Flow run" not in out + err, out + err
    assert err.splitlines()[-1] == (f"error: {bad}: not a readable CSV (Error tokenizing data. C error: EOF inside "
                                    "string starting at row 1)")
