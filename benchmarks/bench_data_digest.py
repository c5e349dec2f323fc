"""What hashing every row of the training data costs, next to MLflow's digest of its first 10,000.

    python benchmarks/bench_data_digest.py                 # 100k and 1M generated reviews
    python benchmarks/bench_data_digest.py --rows 250000

The retrain's fingerprint and every logged training dataset use `data_digest` (all rows), because
MLflow's own digest misses an edit after row 10,000.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from review_sentiment.data.reviews import data_digest  # noqa: E402

WORDS = np.array(["good", "bad", "battery", "display", "not", "worth", "money", "laptop", "super", "slow"])


def reviews(rows: int, seed: int = 0) -> pd.DataFrame:
    """Frames shaped like `Reviews.frame`: review text (about 12 words), rating, label."""
    rng = np.random.default_rng(seed)
    text = [" ".join(words) + f" {i}" for i, words in enumerate(rng.choice(WORDS, (rows, 12)))]
    rating = rng.integers(1, 6, rows)
    return pd.DataFrame({"review": pd.Series(text, dtype=object), "rating": rating, "label": (rating >= 3).astype(int)})


def seconds(digest, frame: pd.DataFrame, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        digest(frame)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def mlflow_digest(frame: pd.DataFrame) -> str:
    return mlflow.data.from_pandas(frame).digest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'rows':>10} {'data_digest s':>14} {'MLflow digest s':>16} {'rows/s (ours)':>14}")
    for rows in args.rows:
        frame = reviews(rows)
        ours = seconds(data_digest, frame, args.repeats)
        theirs = seconds(mlflow_digest, frame, args.repeats)
        print(f"{rows:>10,} {ours:>14.3f} {theirs:>16.3f} {rows / ours:>14,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
