"""Tuning with 1 and 2 workers, on local SQLite and on the shared stack, against the single-process run
of the release before workers existed: whole processes, fresh stores, the same generated reviews.

    python benchmarks/bench_workers.py                    # 8,500 generated reviews, 3 families x 20 trials
    python benchmarks/bench_workers.py --rows 8500 --rounds 2 --baseline-commit 92b11bd

Trials per second: trials finished per second between the first and the last trial's end (child
runs' end times; the release before logged a trial's run only when it ended). The stack
(PostgreSQL, MLflow server, Prefect server) is started in a temporary folder and stopped at the
end; its cost per trial is the difference between a 1-worker run on it and one on SQLite, divided
by the trials, and the time of the calls that log one trial's child run, measured on both.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import optuna
from optuna.trial import FrozenTrial, TrialState

from review_sentiment.orchestration.stack import DEFAULT_PORTS, down, up
from review_sentiment.tracking.trial_runs import log_trial_run

PROJECT = Path(__file__).resolve().parents[1]
TRIALS, FAMILIES = 20, 3


def generate(rows: int, folder: Path) -> Path:
    path = folder / "reviews.csv"
    subprocess.run([sys.executable, str(PROJECT / "data" / "make_sample_reviews.py"), "--rows", str(rows),
                    "--seed", "3", "--out", str(path)], check=True, capture_output=True)
    return path


def baseline_checkout(commit: str, folder: Path) -> Path:
    """The project as it was at `commit` (a detached worktree), to run its tuning script."""
    subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--detach", "-f", str(folder), commit], check=True,
                   capture_output=True)
    return folder


def tuning_run(project: Path, reviews: Path, env: dict[str, str], *flags: str) -> tuple[float, float]:
    """(wall seconds, trials per second) of one tuning run in a fresh folder."""
    with tempfile.TemporaryDirectory() as work:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"} | env | {"PYTHONPATH": str(project)}
        experiment = f"bench-{time.time_ns()}"
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(project / "sentiment_mlflow_optuna.py"), "--data", str(reviews),
                               "--experiment", experiment, *flags], cwd=work, env=env,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"failed ({project}, {flags}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        runs = mlflow.search_runs(experiment_names=[experiment])
        runs = runs[runs["tags.mlflow.parentRunId"].notna()]
        ends = runs.end_time.sort_values()  # the release before logged a trial's run only when it ended
        return seconds, (len(ends) - 1) / (ends.iloc[-1] - ends.iloc[0]).total_seconds()


def logging_ms(uri: str, calls: int = 40) -> float:
    """Median ms to log one finished trial as a child run (create, one batch, terminate)."""
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment(f"bench-logging-{time.time_ns()}")
    parent = client.create_run(experiment).info.run_id
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    trial: FrozenTrial = study.trials[0]
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        log_trial_run(client, experiment, parent, trial, "MAXIMIZE")
        times.append(time.perf_counter() - started)
    assert trial.state == TrialState.COMPLETE
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-commit", default="92b11bd", help="the release before workers (issue 12)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)  # the stack's PostgreSQL runs as its own user when we are root
        reviews = generate(args.rows, tmp_path)
        before = baseline_checkout(args.baseline_commit, tmp_path / "before")
        print(f"{args.rows} generated reviews; {FAMILIES} families x {TRIALS} trials, 5 folds; starting the stack ...",
              flush=True)
        stack = up(tmp_path / "stack", "127.0.0.1", dict(zip(DEFAULT_PORTS, (55990, 55991, 55992), strict=True)))
        stack_env = {k: v for k, v in stack.environment().items() if k in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
        configurations: dict[str, Callable[[], tuple[float, float]]] = {
            f"release {args.baseline_commit}, 1 process": lambda: tuning_run(before, reviews, {}),
            "1 worker, SQLite": lambda: tuning_run(PROJECT, reviews, {}),
            "2 workers, SQLite": lambda: tuning_run(PROJECT, reviews, {}, "--workers", "2"),
            "1 worker, stack": lambda: tuning_run(PROJECT, reviews, stack_env),
            "2 workers, stack": lambda: tuning_run(PROJECT, reviews, stack_env, "--workers", "2"),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in configurations}
        try:
            for round_ in range(args.rounds):
                for name, measure in configurations.items():
                    results[name].append(measure())
                    seconds, rate = results[name][-1]
                    print(f"round {round_ + 1}: {name:<28} {seconds:6.1f} s  {rate:5.2f} trials/s", flush=True)
            log_sqlite = logging_ms(f"sqlite:///{tmp_path / 'logging.db'}")
            log_stack = logging_ms(stack.environment()["MLFLOW_TRACKING_URI"])
        finally:
            down(tmp_path / "stack")
            subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(before)],
                           capture_output=True)
    best = {name: (min(s for s, _ in rows), max(r for _, r in rows)) for name, rows in results.items()}
    base_s = best[f"release {args.baseline_commit}, 1 process"][0]
    print(f"\nbest of {args.rounds} rounds          wall s   x release   trials/s")
    for name, (seconds, rate) in best.items():
        print(f"{name:<32} {seconds:6.1f}   {seconds / base_s:8.2f}   {rate:8.2f}")
    for where in ("SQLite", "stack"):
        one, two = best[f"1 worker, {where}"][1], best[f"2 workers, {where}"][1]
        print(f"2 workers / 1 worker, {where}: {two / one:.2f}x the trials per second (goal >= 1.7x)")
    extra = (best["1 worker, stack"][0] - best["1 worker, SQLite"][0]) / (FAMILIES * TRIALS)
    print(f"the stack instead of SQLite: {extra * 1000:+.0f} ms per trial over the whole run; logging one trial's "
          f"child run {log_stack:.1f} ms on the MLflow server vs {log_sqlite:.1f} ms on SQLite")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    main()
