"""What monitoring costs: one check over 100,000 logged predictions, and the reference profile a
training run logs.

    python benchmarks/bench_monitoring.py                  # 100,000 predictions, 5% with feedback
    python benchmarks/bench_monitoring.py --predictions 250000

Trains a champion on the sample (the retrain flow, in a temporary store and Prefect home), writes
the predictions through the service's own log writer (reviews of the sample's generator, a third of
them of another domain, so the check has drift to find), then times the monitoring flow end to end
and its parts. The profile is timed on the sample and, when present, on ../shared/data's real reviews.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SHARED = PROJECT.parent / "shared" / "data" / "flipkart_laptop_reviews.csv"
sys.path.insert(0, str(PROJECT))


def timed(what: str, rows: list, call, *args, **kwargs):
    started = time.perf_counter()
    result = call(*args, **kwargs)
    rows.append((what, time.perf_counter() - started))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=int, default=100_000)
    parser.add_argument("--feedback-share", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp}/mlflow.db", PREFECT_HOME=f"{tmp}/.prefect",
                          PREFECT_SERVER_ANALYTICS_ENABLED="false")
        os.chdir(tmp)
        return run(args, Path(tmp))


def run(args: argparse.Namespace, tmp: Path) -> int:
    import mlflow
    import numpy as np

    from review_sentiment.constants import MODEL_NAME, SAMPLE_DATA
    from review_sentiment.data.reviews import load_reviews, split_reviews
    from review_sentiment.modeling.families import build_pipeline
    from review_sentiment.modeling.linear import predict_with_scores
    from review_sentiment.monitoring.drift import Window, check
    from review_sentiment.monitoring.logged import Cursor, read_log, read_new
    from review_sentiment.monitoring.profile import PROFILE_ARTIFACT, reference_profile
    from review_sentiment.orchestration.monitor import monitor_predictions
    from review_sentiment.orchestration.retrain import PUBLISHED_DEFAULTS, retrain_logistic
    from review_sentiment.serving.prediction_log import LoggedRequest, PredictionLog, new_prediction_ids
    from review_sentiment.tracking.model_loading import load_calibration, load_pipeline
    from review_sentiment.tracking.model_logging import quiet_mlflow_warnings
    from review_sentiment.tracking.registry import current_champion

    quiet_mlflow_warnings()
    rows: list[tuple[str, float]] = []
    print("Training a champion on the sample (retrain flow)…", flush=True)
    retrain_logistic(data_path=str(SAMPLE_DATA))
    champion = current_champion(MODEL_NAME)
    pipeline = load_pipeline(champion)

    spec = importlib.util.spec_from_file_location("make_sample_reviews", PROJECT / "data" / "make_sample_reviews.py")
    generator = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    n = args.predictions
    reviews = [r for domain, share in (("electronics", 2 / 3), ("food", 1 / 3))
               for r in generator.sample_rows(int(n * share * 1.03), 5, domain) if r["Review text"]][:n]
    texts = [r["Review text"] for r in reviews]
    labels, scores, probabilities = predict_with_scores(pipeline, texts, load_calibration(champion))
    print(f"Writing {len(texts):,} predictions through the service's log writer…", flush=True)
    log_path = tmp / "predictions.db"

    async def write() -> None:
        log = PredictionLog(log_path, max_queued_rows=len(texts) + 1)
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        pending = [log.record(LoggedRequest(f"r{start}", new_prediction_ids(len(chunk)), now, "champion", MODEL_NAME,
                                            str(champion.version), None, chunk, labels[start:start + 1000].tolist(),
                                            scores[start:start + 1000].tolist(), 1.0,
                                            probabilities[start:start + 1000].tolist()))
                   for start in range(0, len(texts), 1000) for chunk in [texts[start:start + 1000]]]
        await asyncio.gather(*pending)
        ids = read_log(log_path)["id"].tolist()
        fed = np.random.default_rng(0).choice(len(ids), int(len(ids) * args.feedback_share), replace=False)
        await asyncio.gather(*(log.feedback(ids[i], int(reviews[i]["Ratings"] >= 3), now, "key:operator", "127.0.0.1")
                               for i in fed))
        await log.close()
    asyncio.run(write())

    print("Warming up Prefect's API with a check of nothing…", flush=True)
    empty = tmp / "empty.db"
    asyncio.run(PredictionLog(empty).close())
    monitor_predictions(prediction_log=str(empty), retrain=False)

    new = timed("read the log", rows, read_new, log_path, Cursor())
    frame, feedback = new.predictions, new.feedback
    window = Window(frame["review"].tolist(), frame["label"].to_numpy(int), frame["score"].to_numpy(float),
                    frame["probability"].to_numpy(float), feedback["true_label"].to_numpy(int),
                    feedback["label"].to_numpy(int), feedback["probability"].to_numpy(float))
    profile = mlflow.artifacts.load_dict(f"runs:/{champion.run_id}/{PROFILE_ARTIFACT}")  # as the flow reads it
    result = timed("drift statistics (cleaning included)", rows, check, window, profile,
                   float(champion.tags["test_f1"]))
    outcome = timed("whole check: monitoring flow, MLflow run and report", rows, monitor_predictions,
                    prediction_log=str(log_path), retrain=False)

    sample = load_reviews(SAMPLE_DATA)
    profile_rows: list[tuple[str, float]] = []
    for name, reviews_ in (("sample", sample), ("real reviews", load_reviews(SHARED, "Review", "Rating")
                                                if SHARED.is_file() else None)):
        if reviews_ is None:
            continue
        split = split_reviews(reviews_, 0.3, 2, 42)
        fitted = build_pipeline("LogisticRegression", PUBLISHED_DEFAULTS, 42).fit(split.X_train, split.y_train)
        timed(f"reference profile, {name} ({len(reviews_.text):,} reviews)", profile_rows, reference_profile,
              fitted, reviews_.usable_text, split.y_train, split.X_test)

    print(f"\nOne check over {len(frame):,} predictions ({len(feedback):,} with feedback): status {outcome.status} "
          f"(drift statistics said {result.status})")
    print(f"{'step':<58} {'seconds':>8}")
    print("-" * 67)
    for what, seconds in rows + profile_rows:
        print(f"{what:<58} {seconds:>8.2f}")
    print("-" * 67)
    whole = dict(rows)["whole check: monitoring flow, MLflow run and report"]
    print(f"goal: a check under 10 s — {'met' if whole < 10 else 'missed'} ({whole:.1f} s); "
          f"profile under 0.5 s — {'met' if max(s for _, s in profile_rows) < 0.5 else 'missed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
