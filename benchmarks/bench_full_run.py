"""A full tuning run against the published baseline, side by side, as whole processes.

    python benchmarks/bench_full_run.py ../shared/data/flipkart_laptop_reviews.csv --text-col Review --rating-col Rating

Runs the published loop (no MLflow) and `sentiment_mlflow_optuna.py` (3 families x 20 trials,
5 folds, all tracking and registration) on the same file, each --repeats times; ours once into
a fresh tracking store and then again into the same store. Prints wall-clock seconds and both
results tables.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = PROJECT.parent / "shared" / "reference" / "published_pipeline.py"


def run(cmd: list[str], cwd: str) -> tuple[float, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(cwd) / 'mlflow.db'}"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return elapsed, proc.stdout


def table(output: str) -> list[str]:
    return [line for line in output.splitlines() if "| CV F1=" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--text-col", default="Review text")
    parser.add_argument("--rating-col", default="Ratings")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-jobs", default="1")
    args = parser.parse_args()
    csv = str(args.csv.resolve())
    baseline = [sys.executable, str(args.reference), csv, args.text_col, args.rating_col]
    ours = [sys.executable, str(PROJECT / "sentiment_mlflow_optuna.py"), "--data", csv, "--text-col",
            args.text_col, "--rating-col", args.rating_col, "--n-jobs", args.n_jobs]
    rows = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as store:
            base_s, base_out = run(baseline, store)
            fresh_s, fresh_out = run(ours, store)
            again_s, _ = run(ours, store)
        rows.append((base_s, fresh_s, again_s))
        print(f"repeat {repeat + 1}: baseline {base_s:.1f}s | ours, fresh store {fresh_s:.1f}s | "
              f"ours, existing store {again_s:.1f}s", flush=True)
    print("\nbaseline (published loop, no MLflow):")
    print("\n".join(table(base_out)))
    print("ours:")
    print("\n".join(row.rsplit("|", 1)[0] for row in table(fresh_out)))
    best = [min(col) for col in zip(*rows, strict=True)]
    print(f"\nbest of {args.repeats}: baseline {best[0]:.1f}s, ours fresh {best[1]:.1f}s "
          f"({best[1] / best[0]:.2f}x), ours existing store {best[2]:.1f}s ({best[2] / best[0]:.2f}x)")


if __name__ == "__main__":
    main()
