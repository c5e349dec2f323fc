"""The monitoring flow for real (real Prefect server, real MLflow store, a prediction log written by the
service's own writer): a shifted domain is flagged, retrains on the feedback, then cools down."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pytest

from review_sentiment.constants import (
    ANONYMOUS,
    MODEL_NAME,
    MONITORING_EXPERIMENT,
    MONITORING_STATUS_TAG,
    RETRAIN_EXPERIMENT,
)
from review_sentiment.modeling.linear import predict_with_scores
from review_sentiment.monitoring.drift import DEGRADED, DRIFT, INSUFFICIENT, OK, SUSPECT
from review_sentiment.monitoring.logged import read_log
from review_sentiment.orchestration.monitor import RETRAIN_PENDING, monitor_predictions
from review_sentiment.orchestration.retrain import retrain_logistic
from review_sentiment.serving.prediction_log import LoggedRequest, PredictionLog
from review_sentiment.serving.routes.state import key_identity
from review_sentiment.tracking.model_loading import load_calibration, load_pipeline
from review_sentiment.tracking.registry import current_champion
from tests.code.test_drift import generator
from tests.e2e.test_retrain_and_scoring_flows import prefect_api  # noqa: F401 — the module's Prefect server
from tests.helpers import SAMPLE, Store

TRUSTED = key_identity("the operator's key")  # labels given with the service's API key


def serve_and_log(path: Path, domain: str, seed: int, rows: int, feedback_every: int, giver: str = TRUSTED,
                  flipped: bool = False) -> int:
    """What the service would log for `rows` reviews of `domain` scored by the champion, with the true
    label (from the review's rating; the opposite if `flipped`) fed back by `giver` for every
    `feedback_every`-th; returns how many distinct reviews got feedback."""
    champion = current_champion(MODEL_NAME)
    reviews = [r for r in generator().sample_rows(rows, seed, domain) if r["Review text"]]
    texts = [r["Review text"] for r in reviews]
    labels, scores, probabilities = predict_with_scores(load_pipeline(champion), texts, load_calibration(champion))

    async def write() -> int:
        log = PredictionLog(path)
        for n, (text, label, score, probability) in enumerate(zip(texts, labels, scores, probabilities, strict=True)):
            await log.record(LoggedRequest(f"{seed}-{n}", [f"{seed}-{n}"], datetime.now(UTC).isoformat(), "champion",
                                           MODEL_NAME, str(champion.version), None, [text], [int(label)],
                                           [float(score)], 1.0, [float(probability)]))
        fed = [(f"{seed}-{n}", int(r["Ratings"] >= 3) ^ flipped) for n, r in enumerate(reviews)
               if n % feedback_every == 0]
        for prediction_id, truth in fed:
            await log.feedback(prediction_id, truth, "2026-11-28T01:00:00.000+00:00", giver, "127.0.0.1")
        await log.close()
        return len({texts[int(prediction_id.split("-")[1])] for prediction_id, _ in fed})
    return asyncio.run(write())


def test_a_shifted_domain_is_flagged_retrains_on_feedback_then_cools_down(store: Store, tmp_path: Path) -> None:
    retrain_logistic(data_path=str(SAMPLE))
    first = current_champion(MODEL_NAME)
    log_path = tmp_path / "predictions.db"
    fed = serve_and_log(log_path, "food", seed=11, rows=450, feedback_every=3)

    outcome = monitor_predictions(prediction_log=str(log_path), data_path=str(SAMPLE))
    # the inputs drifted, and the feedback shows the model failing on them: degraded wins
    assert outcome.status == DEGRADED and outcome.versions == {f"v{first.version}": DEGRADED}
    assert "triggered a retrain" in outcome.retrain and "registered" in outcome.retrain, outcome.retrain
    check_run = mlflow.get_run(outcome.run_id)
    assert check_run.data.tags["status"] == DEGRADED and check_run.data.metrics["predictions"] > 250
    assert check_run.data.metrics["input/out_of_vocabulary_share"] > 0.3
    # the label-free estimate, and once trusted feedback came for some of the rows, the truth beside it
    metrics = check_run.data.metrics
    assert 0 < metrics["performance/estimated_f1_low"] <= metrics["performance/estimated_f1"] \
        <= metrics["performance/estimated_f1_high"] <= 1
    assert 0 <= metrics["performance/realized_f1"] < float(first.tags["test_f1"]) and \
        0 < metrics["performance/estimated_f1_on_feedback_rows"] <= 1
    report = mlflow.artifacts.load_text(f"runs:/{outcome.run_id}/report.html")
    assert "out-of-vocabulary share" in report and "data:image/png;base64," in report
    assert "macro-F1 estimated without labels" in report and "Macro-F1 across checks" in report

    retrains = mlflow.search_runs(experiment_names=[RETRAIN_EXPERIMENT], order_by=["start_time DESC"])
    triggered = retrains.iloc[0]
    trained = int(triggered["tags.feedback_rows"])  # the rest are held out, as the file's slice is: they judge
    assert triggered["tags.triggered_by"] == outcome.run_id and 0.5 * fed < trained < fed
    datasets = {i.tags[0].value: i.dataset for i in mlflow.get_run(triggered["run_id"]).inputs.dataset_inputs}
    assert datasets["training"].name == f"sample_reviews-train + {trained} fed-back reviews"
    versions = sorted(mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    decided = versions[1].tags["promotion"]  # the registry records the decision: feedback held out judged it
    assert len(versions) == 2 and f"promoted over champion v{first.version}: better on the trusted feedback" \
        in decided, decided
    # the scheduled retrain on the CSV alone must not train the CSV's model again and undo the feedback
    assert retrain_logistic(data_path=str(SAMPLE)).status == "skipped"

    assert monitor_predictions(prediction_log=str(log_path), data_path=str(SAMPLE)).status == INSUFFICIENT
    serve_and_log(log_path, "food", seed=12, rows=300, feedback_every=3)
    again = monitor_predictions(prediction_log=str(log_path), data_path=str(SAMPLE))
    assert again.status in (DRIFT, DEGRADED) and "cooling down" in again.retrain, again.retrain
    checks = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], order_by=["start_time"])
    assert list(checks["tags.status"]) == [DEGRADED, INSUFFICIENT, again.status]


def test_feedback_that_comes_after_its_predictions_were_checked_still_counts(store: Store, tmp_path: Path) -> None:
    retrain_logistic(data_path=str(SAMPLE))
    log_path = tmp_path / "predictions.db"
    serve_and_log(log_path, "electronics", seed=21, rows=300, feedback_every=1000)
    outcome = monitor_predictions(prediction_log=str(log_path), data_path=str(SAMPLE), retrain=False)
    assert (outcome.status, outcome.retrain) == ("ok", "nothing to do")
    assert np.isclose(mlflow.get_run(outcome.run_id).data.metrics["predictions"], 300, atol=6)

    async def contradict() -> None:  # a day later: true labels for 100 of those predictions, all contrary
        log = PredictionLog(log_path)
        said = read_log(log_path)[["id", "label"]].iloc[1:101]
        for prediction_id, label in said.itertuples(index=False):
            await log.feedback(prediction_id, 1 - int(label), datetime.now(UTC).isoformat(), TRUSTED)
        await log.close()
    asyncio.run(contradict())
    late = monitor_predictions(prediction_log=str(log_path), data_path=str(SAMPLE), retrain=False)
    assert late.status == DEGRADED and "retraining is off" in late.retrain  # no new inputs to tell a shift by
    assert mlflow.get_run(late.run_id).data.metrics == pytest.approx(
        mlflow.get_run(late.run_id).data.metrics | {"predictions": 0, "feedback": 100})


@pytest.mark.e2e  # two checks of 300 predictions: slow for the inner loop
def test_flipped_labels_on_familiar_reviews_are_suspect_and_anonymous_ones_count_for_nothing(store: Store,
                                                                                            tmp_path: Path) -> None:
    """Trusted labels that contradict a model on the kind of reviews it was judged on (inputs measured,
    no drift): reported as suspect-feedback, never a retrain. The same labels from anyone: kept, counted,
    trusted with nothing."""
    retrain_logistic(data_path=str(SAMPLE))
    champion = current_champion(MODEL_NAME)
    anonymous = tmp_path / "anonymous.db"
    serve_and_log(anonymous, "electronics", seed=41, rows=300, feedback_every=2, giver=ANONYMOUS, flipped=True)
    ignored = monitor_predictions(prediction_log=str(anonymous))
    assert ignored.status == OK and ignored.retrain == "nothing to do"
    metrics = mlflow.get_run(ignored.run_id).data.metrics
    assert metrics["feedback"] > 140 and metrics["feedback_trusted"] == 0

    trusted = tmp_path / "trusted.db"
    serve_and_log(trusted, "electronics", seed=42, rows=300, feedback_every=2, flipped=True)
    suspect = monitor_predictions(prediction_log=str(trusted))
    assert suspect.status == SUSPECT and "not retraining on it" in suspect.retrain, suspect.retrain
    assert current_champion(MODEL_NAME).version == champion.version
    version = mlflow.MlflowClient().get_model_version(MODEL_NAME, champion.version)
    assert version.tags[MONITORING_STATUS_TAG] == SUSPECT  # what the service exports on /metrics


def test_a_log_is_one_log_by_any_path_and_a_new_log_at_an_old_path_starts_anew(store: Store, tmp_path: Path) -> None:
    retrain_logistic(data_path=str(SAMPLE))
    log_path = tmp_path / "logs" / "predictions.db"
    log_path.parent.mkdir()
    serve_and_log(log_path, "electronics", seed=31, rows=300, feedback_every=1000)
    by_relative_path = monitor_predictions(prediction_log=os.path.relpath(log_path), retrain=False)
    assert mlflow.get_run(by_relative_path.run_id).data.metrics["predictions"] > 250
    by_absolute_path = monitor_predictions(prediction_log=str(log_path), retrain=False)  # nothing new since
    assert mlflow.get_run(by_absolute_path.run_id).data.metrics["predictions"] == 0

    log_path.unlink()  # a new log where the old one was: all of it is new
    serve_and_log(log_path, "electronics", seed=32, rows=100, feedback_every=1000)
    anew = monitor_predictions(prediction_log=str(log_path), retrain=False)
    assert np.isclose(mlflow.get_run(anew.run_id).data.metrics["predictions"], 100, atol=3)


KILLED_DURING_RETRAIN = """
import os, signal, sys
from review_sentiment.orchestration import monitor
monitor.retrain_logistic = lambda **_: os.kill(os.getpid(), signal.SIGKILL)
monitor.monitor_predictions(prediction_log=sys.argv[1], data_path=sys.argv[2])
"""


def test_a_check_killed_during_its_retrain_leaves_the_retrain_to_the_next_check(store: Store, tmp_path: Path,
                                                                                 prefect_server: str) -> None:
    retrain_logistic(data_path=str(SAMPLE))
    log_path = tmp_path / "predictions.db"
    serve_and_log(log_path, "food", seed=11, rows=450, feedback_every=3)
    killed = subprocess.run([sys.executable, "-c", KILLED_DURING_RETRAIN, str(log_path), str(SAMPLE)],
                            env=os.environ | {"PREFECT_API_URL": prefect_server}, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    left = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT]).iloc[0]
    assert (left["tags.status"], left["tags.retrain"]) == (DEGRADED, RETRAIN_PENDING)
    assert mlflow.search_runs(experiment_names=[RETRAIN_EXPERIMENT], filter_string="tags.triggered_by != ''").empty

    nothing_new = monitor_predictions(prediction_log=str(log_path), data_path=str(SAMPLE))
    assert nothing_new.status == INSUFFICIENT, nothing_new  # its window: no rows; the retrain is the killed one's
    assert "triggered a retrain" in nothing_new.retrain and left["run_id"] in nothing_new.retrain, nothing_new.retrain
    retrains = mlflow.search_runs(experiment_names=[RETRAIN_EXPERIMENT], order_by=["start_time DESC"])
    assert retrains.iloc[0]["tags.triggered_by"] == nothing_new.run_id
    assert mlflow.get_run(nothing_new.run_id).data.tags["retrain_left_by"] == left["run_id"]
    again = monitor_predictions(prediction_log=str(log_path), data_path=str(SAMPLE))  # done: not left any more
    assert again.retrain == "nothing to do", again.retrain
