"""Start-up: how soon each entry script answers `--help`, and how soon a tuning run's first trial starts.

    python benchmarks/bench_startup.py [--repeats 5]

Baselines measured in the same run: a bare `python -c pass` (the floor), and importing the pipeline the way
`--help` did before it was read first (`import review_sentiment.training.tuning_run`). The first trial is
timed from launch to its progress line, on the bundled sample in a fresh folder (a new MLflow store and
Optuna storage: the cost a new user meets), then in a folder that holds `--history` earlier runs.

Opening the studies' journal after those runs, in a fresh process each time: Optuna's own JournalStorage
replaying every log of the file (the baseline), against `study.open_storage` restoring the snapshot kept
beside it (`journal.FileJournal`) and replaying only what came after.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from review_sentiment.training.journal import FileJournal

PROJECT_DIR = Path(__file__).resolve().parents[1]
SCRIPTS = ("sentiment_mlflow_optuna.py", "ml_orchestration_flipkart.py", "serve_api.py", "stack.py")


def seconds(argv: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, cwd=PROJECT_DIR, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def first_trial(repeats: int, history: Path | None = None) -> tuple[list[float], list[float]]:
    """Seconds from launch to the first trial's line, and to the end, of a short run in a fresh folder (a
    copy of `history`'s, where given)."""
    to_trial, to_end = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            if history is not None:
                shutil.copytree(history, folder, dirs_exist_ok=True)
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


def earlier_runs(folder: Path, runs: int) -> None:
    """`runs` tuning runs of the bundled sample in `folder` (3 families x 20 trials each, seeds 1, 2, …)."""
    for seed in range(1, runs + 1):
        subprocess.run([sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--seed", str(seed)],
                       cwd=folder, check=True, capture_output=True)


_OPEN = """import sys, time
from optuna.storages.journal import JournalFileBackend, JournalStorage
from review_sentiment.training.study import open_storage
started = time.perf_counter()
storage = JournalStorage(JournalFileBackend(sys.argv[1])) if sys.argv[2] == "optuna" else open_storage(sys.argv[1])
print(time.perf_counter() - started, len(storage.get_all_studies()))
"""


def journal_opened(journal: Path, how: str, repeats: int) -> list[float]:
    """Seconds to open the journal and rebuild its studies, each in a fresh process (imports not counted)."""
    times = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", _OPEN, str(journal), how], cwd=PROJECT_DIR, check=True,
                              capture_output=True, text=True)
        times.append(float(done.stdout.split()[0]))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--history", type=int, default=20, help="earlier runs in the folder of the last rows")
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
    with tempfile.TemporaryDirectory() as history:
        print(f"making {args.history} earlier runs (sample, 3 x 20 trials) ...", flush=True)
        earlier_runs(Path(history), args.history)
        journal = Path(history) / "optuna.journal"
        FileJournal(journal).snapshot_path.unlink(missing_ok=True)  # the runs' last may have kept one
        logs = sum(1 for _ in journal.open("rb"))
        replayed = journal_opened(journal, "optuna", args.repeats)
        journal_opened(journal, "ours", 1)  # makes the snapshot
        rows += [(f"journal of {args.history} runs: Optuna replays", replayed),
                 (f"journal of {args.history} runs: from snapshot", journal_opened(journal, "ours", args.repeats))]
        to_trial, _ = first_trial(max(1, args.repeats // 2), Path(history))
        rows.append((f"tuning after {args.history} runs: → first trial", to_trial))
    print(f"({logs:,} logs in the journal of {args.history} runs)")
    print(f"\n{'command':<42}{'median s':>10}{'min s':>8}{'max s':>8}")
    for label, times in rows:
        print(f"{label:<42}{statistics.median(times):>10.2f}{min(times):>8.2f}{max(times):>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
