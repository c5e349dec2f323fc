"""Does monitoring tell the truth on real reviews? False alarms, sensitivity, calibration and label-free
F1 estimates, measured on the real file (../shared/data, never copied here) or, without it, the sample.

    python benchmarks/bench_monitoring_truth.py                 # tunes on 70% of the real file: ~3 min
    python benchmarks/bench_monitoring_truth.py --no-nannyml    # without the side-by-side with NannyML

The file's rows are split 70/30 at random. The tuning script tunes every family on the 70% (in a
temporary store); each family's registered version then serves windows drawn (with replacement) from
the other 30%, which no model saw:
- false alarms: 40 windows of 200 and 40 of 600 reviews as they come: share of checks not "ok";
- sensitivity: 40 windows of 200 reviews of another domain (the sample generator's food reviews) and
  40 of 200 with the positive share moved to 0.45: share of checks that alarm;
- calibration: Brier score and ECE (15 equal-count bins) on the version's test split, of the family's own
  score and of the calibrated probability;
- estimation: windows of 600 with positive share 0.3 … 0.95, and of food reviews: |estimated − realized|
  macro-F1; side by side with NannyML's CBPE (0.13.1, installed in its own venv under
  benchmarks/.nannyml-venv on first use, ~2 min, 2.2 GB) given the same windows and probabilities.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "data" / "flipkart_laptop_reviews.csv"
NANNYML_VENV = PROJECT / "benchmarks" / ".nannyml-venv"
NANNYML = ["nannyml==0.13.1", "statsmodels"]  # nannyml 0.13.1 imports statsmodels without requiring it
sys.path.insert(0, str(PROJECT))

SHARES = (0.3, 0.5, 0.7, 0.85, 0.95)


def generator():
    path = PROJECT / "data" / "make_sample_reviews.py"
    spec = importlib.util.spec_from_file_location("make_sample_reviews", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=15, help="tuning trials per family")
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-nannyml", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", PREFECT_HOME=f"{tmp}/.prefect",
                          PREFECT_SERVER_ANALYTICS_ENABLED="false")
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    import mlflow
    from sklearn.metrics import brier_score_loss

    from review_sentiment.constants import MODEL_NAME, SAMPLE_DATA
    from review_sentiment.data.reviews import load_reviews, split_reviews
    from review_sentiment.modeling.linear import predict_with_scores
    from review_sentiment.modeling.metrics import expected_calibration_error, macro_f1
    from review_sentiment.monitoring.drift import OK, Window, check
    from review_sentiment.monitoring.estimate import estimated_macro_f1
    from review_sentiment.monitoring.profile import PROFILE_ARTIFACT, ReferenceProfile
    from review_sentiment.tracking.model_loading import load_calibration, load_pipeline
    from review_sentiment.tracking.records import VersionRecord

    source, text_col, rating_col = ((SHARED, "Review", "Rating") if SHARED.is_file()
                                    else (SAMPLE_DATA, "Review text", "Ratings"))
    raw = pd.read_csv(source)
    order = np.random.default_rng(args.seed).permutation(len(raw))
    cut = int(0.7 * len(raw))
    raw.iloc[order[:cut]].to_csv(tmp / "tuning.csv", index=False)
    pool = raw.iloc[order[cut:]].dropna(subset=[text_col, rating_col])
    pool = pool[pool[text_col].astype(str).str.strip() != ""]
    texts = pool[text_col].astype(str).str.strip().to_numpy(object)
    truth = (pool[rating_col].astype(float) >= 3).astype(int).to_numpy()
    print(f"{source.name}: {cut} rows to tune on, {len(texts)} unseen rows to serve "
          f"({truth.mean():.0%} positive)", flush=True)

    started = time.perf_counter()
    subprocess.run([sys.executable, str(PROJECT / "sentiment_mlflow_optuna.py"), "--data", str(tmp / "tuning.csv"),
                    "--text-col", text_col, "--rating-col", rating_col, "--trials", str(args.trials),
                    "--seed", str(args.seed), "--unlocked-promotion"], check=True, cwd=tmp,
                   stdout=subprocess.DEVNULL)
    print(f"tuned in {time.perf_counter() - started:.0f} s", flush=True)

    food = generator()
    food_rows = [r for r in food.sample_rows(args.windows * 600, args.seed, "food") if r["Review text"]]
    food_texts = np.array([r["Review text"] for r in food_rows], object)
    food_truth = np.array([int(r["Ratings"] >= 3) for r in food_rows])
    rng = np.random.default_rng(args.seed)
    positive, negative = np.flatnonzero(truth == 1), np.flatnonzero(truth == 0)

    def with_share(share: float, size: int) -> np.ndarray:
        up = round(share * size)
        return np.concatenate([rng.choice(positive, up), rng.choice(negative, size - up)])

    calibration_rows, alarm_rows, estimate_rows, nannyml_jobs = [], [], [], []
    client = mlflow.MlflowClient()
    for version in sorted(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version)):
        record = VersionRecord.of(version)
        family, lineage = record.family, record.lineage
        pipeline, calibration = load_pipeline(version), load_calibration(version)
        profile = ReferenceProfile.from_dict(mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{PROFILE_ARTIFACT}"))
        split = split_reviews(load_reviews(lineage.data, text_col, rating_col), lineage.held_out, 2, lineage.seed)
        test_labels, test_scores, test_probability = predict_with_scores(pipeline, split.X_test, calibration)
        calibration_rows.append({
            "family": family, "method": calibration.method, "test reviews": len(split.y_test),
            "Brier (score)": brier_score_loss(split.y_test, test_scores),
            "Brier (calibrated)": brier_score_loss(split.y_test, test_probability),
            "ECE (score)": expected_calibration_error(split.y_test, test_scores),
            "ECE (calibrated)": expected_calibration_error(split.y_test, test_probability)})

        def alarmed(windows: list[np.ndarray], pipeline=pipeline, calibration=calibration, profile=profile,
                    test_f1=record.test_f1) -> float:
            statuses = []
            for k, window_texts in enumerate(windows):
                labels, scores, probability = predict_with_scores(pipeline, list(window_texts), calibration)
                window = Window(list(window_texts), labels, scores, probability, np.array([], int),
                                np.array([], int), np.array([]))
                statuses.append(check(window, profile, test_f1, seed=k).status)
            return 1 - statuses.count(OK) / len(statuses)

        alarm_rows.append({
            "family": family,
            "same product, 200": alarmed([texts[rng.integers(0, len(texts), 200)] for _ in range(args.windows)]),
            "same product, 600": alarmed([texts[rng.integers(0, len(texts), 600)] for _ in range(args.windows)]),
            "food, 200": alarmed([food_texts[k * 200:(k + 1) * 200] for k in range(args.windows)]),
            "positive share 0.45, 200": alarmed([texts[with_share(0.45, 200)] for _ in range(args.windows)])})
        print(f"{family}: checked {4 * args.windows} windows", flush=True)

        windows = [(f"positive {share:.2f}", texts[i], truth[i]) for share in SHARES
                   for i in (with_share(share, 600) for _ in range(8))]
        windows += [("food", food_texts[k * 600:(k + 1) * 600], food_truth[k * 600:(k + 1) * 600]) for k in range(8)]
        job = {"reference": [test_probability.tolist(), split.y_test.tolist(), test_labels.tolist()], "windows": []}
        for kind, window_texts, window_truth in windows:
            labels, _, probability = predict_with_scores(pipeline, list(window_texts), calibration)
            estimate = estimated_macro_f1(labels, probability)
            estimate_rows.append({"family": family, "window": kind, "estimated": estimate.f1,
                                  "realized": macro_f1(window_truth, labels), "low": estimate.low,
                                  "high": estimate.high})
            job["windows"].append([probability.tolist(), labels.tolist()])
        nannyml_jobs.append(job)

    pd.set_option("display.width", 160)
    print("\nCalibration on each version's test split (never used to fit it)")
    print(pd.DataFrame(calibration_rows).round(4).to_string(index=False))
    print(f"\nShare of checks alarmed ({args.windows} windows each; same product: false alarms, docs/results.md: ≤ 5%)")
    print(pd.DataFrame(alarm_rows).round(3).to_string(index=False))
    estimates = pd.DataFrame(estimate_rows)
    estimates["error"] = (estimates["estimated"] - estimates["realized"]).abs()
    estimates["covered"] = (estimates["low"] <= estimates["realized"]) & (estimates["realized"] <= estimates["high"])
    print("\nLabel-free macro-F1 against the realized one (8 windows of 600 per row)")
    print(estimates.groupby(["family", "window"], sort=False).agg(
        estimated=("estimated", "mean"), realized=("realized", "mean"), median_error=("error", "median"),
        worst_error=("error", "max"), interval_covers=("covered", "mean")).round(3).to_string())
    estimates["windows"] = np.where(estimates["window"] == "food", "food", "shares 0.3-0.95")
    print(estimates.groupby(["family", "windows"], sort=False).agg(
        median_error=("error", "median"), worst_error=("error", "max")).round(3).to_string())
    if not args.no_nannyml:
        theirs = np.array([f1 for job in nannyml_jobs for f1 in nannyml_estimates(job, tmp)])
        gap = np.abs(theirs - estimates["estimated"].to_numpy())
        print(f"\nNannyML CBPE 0.13.1 on the same {len(gap)} windows and probabilities: |ours − theirs| "
              f"median {np.median(gap):.2g}, worst {gap.max():.2g}")
    return 0


def nannyml_estimates(job: dict, tmp: Path) -> list[float]:
    """NannyML's macro-F1 per window, from its own venv (made on first use)."""
    python = NANNYML_VENV / "bin" / "python"
    if not python.exists():
        print(f"installing {' '.join(NANNYML)} into {NANNYML_VENV} (once)…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(NANNYML_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *NANNYML], check=True)
    path = tmp / "nannyml_job.json"
    path.write_text(json.dumps(job))
    out = subprocess.run([str(python), str(PROJECT / "benchmarks" / "nannyml_cbpe.py"), str(path)], check=True,
                         capture_output=True, text=True, env={**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"})
    return json.loads(out.stdout)


if __name__ == "__main__":
    sys.exit(main())
