"""Start-up: how soon each entry script answers `--help`, and how soon a tuning run's first trial starts.

    python benchmarks/bench_startup.py [--repeats 5]

Baselines measured in the same run: a bare `python -c pass` (the floor), and importing the pipeline the way
`--help` did before it was read first (`import review_sentiment.training.tuning_run`). The first trial is
timed from launch to its progress line, on the bundled sample in a fresh folder (a new MLflow store and
Optuna storage: the cost a new user meets).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
SCRIPTS = ("sentiment_mlflow_optuna.py", "ml_orchestration_flipkart.py", "serve_api.py", "stack.py")


def seconds(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=PROJECT_DIR, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def first_trial(repeats: int) -> tuple[list[float], list[float]]:
    """Seconds from launch to the first trial's line, and to the end, of a short run in a fresh folder."""
    to_trial, to_end = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            run = subprocess.Popen([sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--trials", "2",
                                    "--folds", "3", "--models", "LogisticRegression"], cwd=folder, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert run.stdout is not None
            first = None
            for line in run.stdout:
                if first is None and line.startswith("  trial"):
                    first = time.perf_counter() - started
            if run.wait() != 0 or first is None:
                raise SystemExit("the tuning run failed")
            to_trial.append(first)
            to_end.append(time.perf_counter() - started)
    return to_trial, to_end


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows: list[tuple[str, list[float]]] = [
        ("python -c pass (floor)", seconds([sys.executable, "-c", "pass"], args.repeats)),
        ("import the pipeline (--help before)",
         seconds([sys.executable, "-c", "import review_sentiment.training.tuning_run"], args.repeats)),
    ]
    for script in SCRIPTS:
        print(f"timing {script} --help ...", flush=True)
        rows.append((f"{script} --help", seconds([sys.executable, script, "--help"], args.repeats)))
    print("timing a tuning run's first trial (sample, fresh folder) ...", flush=True)
    to_trial, to_end = first_trial(max(1, args.repeats // 2))
    rows += [("tuning: launch → first trial", to_trial), ("tuning: launch → done (2 trials, LR)", to_end)]
    print(f"\n{'command':<42}{'median s':>10}{'min s':>8}{'max s':>8}")
    for label, times in rows:
        print(f"{label:<42}{statistics.median(times):>10.2f}{min(times):>8.2f}{max(times):>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
