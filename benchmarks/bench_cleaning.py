"""Cleaning throughput: the published per-review `clean_text` vs our batch `clean_texts`.

    python benchmarks/bench_cleaning.py ../shared/data/flipkart_laptop_reviews.csv --text-col Review

Each repeat starts with an empty stem cache (cold), so the speed-up is not a warm-cache artefact.
Also prints a warm repeat and the unique-texts-only figure. Exits 1 if any output differs.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import text_cleaning  # noqa: E402

DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "published_pipeline.py"


def load_reference(path: Path):
    spec = importlib.util.spec_from_file_location("published_pipeline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.clean_text


def timed(fn, texts, repeats: int, cold: bool) -> tuple[float, list[str]]:
    times = []
    for _ in range(repeats):
        if cold:
            text_cleaning._stem.cache_clear()
        started = time.perf_counter()
        out = fn(texts)
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--text-col", default="Review text")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    reference = load_reference(args.reference)
    texts = pd.read_csv(args.csv, sep="\t" if args.csv.suffix == ".tsv" else ",")[args.text_col].dropna().tolist()
    unique = list(dict.fromkeys(texts))
    per_review = lambda batch: [reference(t) for t in batch]  # noqa: E731
    print(f"{len(texts)} reviews ({len(unique)} unique) from {args.csv}")
    print(f"{'case':<44}{'seconds':>10}{'reviews/s':>12}{'speed-up':>10}")
    identical = True
    for label, batch in (("all rows", texts), ("unique texts only", unique)):
        ref_s, expected = timed(per_review, batch, args.repeats, cold=False)
        cold_s, cold_out = timed(text_cleaning.clean_texts, batch, args.repeats, cold=True)
        warm_s, warm_out = timed(text_cleaning.clean_texts, batch, args.repeats, cold=False)
        identical &= expected == cold_out == warm_out == [text_cleaning.clean_text(t) for t in batch]
        for name, secs in ((f"published clean_text, {label}", ref_s), (f"clean_texts cold, {label}", cold_s),
                           (f"clean_texts warm, {label}", warm_s)):
            print(f"{name:<44}{secs:>10.4f}{len(batch) / secs:>12,.0f}{ref_s / secs:>9.1f}x")
    print(f"outputs identical to the published clean_text: {identical}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
