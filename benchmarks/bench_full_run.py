"""A full tuning run against the published baseline, side by side, as whole processes.

    python benchmarks/bench_full_run.py ../shared/data/flipkart_laptop_reviews.csv --text-col Review --rating-col Rating
    python benchmarks/bench_full_run.py --generate 8500      # reviews made by data/make_sample_reviews.py

Runs the published loop (no MLflow) and `sentiment_mlflow_optuna.py` (3 families x 20 trials, 5 folds,
every trial a child run, three models logged and registered, the champion decided) on the same file,
each --repeats times, interleaved; ours once into a fresh tracking store and then again into the same
store. Prints each repeat, both results tables, and the best times side by side.
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


def generated(rows: int, folder: Path) -> Path:
    path = folder / f"generated_{rows}.csv"
    subprocess.run([sys.executable, str(PROJECT / "data" / "make_sample_reviews.py"), "--rows", str(rows),
                    "--out", str(path)], check=True, capture_output=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("csv", type=Path, nargs="?")
    source.add_argument("--generate", type=int, metavar="ROWS", help="generate this many reviews instead")
    parser.add_argument("--text-col", default="Review text")
    parser.add_argument("--rating-col", default="Ratings")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        csv = str(generated(args.generate, Path(data_dir)) if args.generate else args.csv.resolve())
        baseline = [sys.executable, str(args.reference), csv, args.text_col, args.rating_col]
        ours = [sys.executable, str(PROJECT / "sentiment_mlflow_optuna.py"), "--data", csv, "--text-col",
                args.text_col, "--rating-col", args.rating_col]
        rows = []
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory() as store:
                base_s, base_out = run(baseline, store)
                fresh_s, fresh_out = run(ours, store)
                again_s, _ = run(ours, store)
            rows.append((base_s, fresh_s, again_s))
            print(f"repeat {repeat + 1}: baseline {base_s:.1f}s | ours, fresh store {fresh_s:.1f}s | "
                  f"ours, existing store {again_s:.1f}s", flush=True)
    print(f"\n{csv if not args.generate else f'{args.generate} generated reviews'}")
    print("baseline (published loop, no MLflow):")
    print("\n".join(table(base_out)))
    print("ours:")
    print("\n".join(row.rsplit("|", 1)[0] for row in table(fresh_out)))
    base, fresh, again = (min(col) for col in zip(*rows, strict=True))
    print(f"\n| best of {args.repeats} | seconds | x baseline |\n| --- | --- | --- |")
    for name, seconds in (("published loop, no MLflow", base), ("ours, fresh store", fresh),
                          ("ours, existing store", again)):
        print(f"| {name} | {seconds:.1f} | {seconds / base:.2f} |")


if __name__ == "__main__":
    main()
