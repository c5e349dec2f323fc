"""The loop closed, as a user runs it: the real service answers reviews of a domain it never saw and
takes their true labels through /feedback, given with its API key (trusted); `ml_orchestration_flipkart.py
monitor --once` flags it and retrains the champion's lineage (no --data) plus that feedback; the rule
decides on the held-out feedback; the running service swaps to the winner."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import mlflow

from review_sentiment.constants import DEFAULT_PREDICTION_LOG, MODEL_NAME, MONITORING_EXPERIMENT, RETRAIN_EXPERIMENT
from review_sentiment.tracking.registry import current_champion
from tests.code.test_drift import generator
from tests.e2e.served import Service
from tests.helpers import PROJECT_DIR, SAMPLE, Store, wait_for

KEY = "the-operators-key"


def test_feedback_on_a_new_domain_retrains_and_the_service_swaps_to_the_winner(own_store: Store,
                                                                              prefect_server: str) -> None:
    before = current_champion(MODEL_NAME)
    service = Service.start(own_store.uri, own_store.path, "--poll-seconds", "0.5", "--api-key", KEY)
    try:
        wait_for(lambda: service.client.get("/health").json().get("status") == "ready", 60, "a loaded model")
        reviews = [r for r in generator().sample_rows(400, 31, "food") if r["Review text"]]
        for start in range(0, len(reviews), 20):
            batch = reviews[start:start + 20]
            answer = service.client.post("/predict", json={"reviews": [r["Review text"] for r in batch]})
            assert answer.status_code == 200, answer.text
            for review, prediction in zip(batch, answer.json()["predictions"], strict=True):
                truth = "positive" if review["Ratings"] >= 3 else "negative"
                fed = service.client.post("/feedback", json={"prediction_id": prediction["id"], "label": truth},
                                          headers={"Authorization": f"Bearer {KEY}"})
                assert fed.status_code == 200, fed.text

        check = subprocess.run(
            [sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--prediction-log",
             str(own_store.path / DEFAULT_PREDICTION_LOG), "monitor"],
            cwd=own_store.path, env=dict(os.environ, MLFLOW_TRACKING_URI=own_store.uri, PREFECT_API_URL=prefect_server),
            capture_output=True, text=True, timeout=300)  # on the session's Prefect server, as on a stack
        assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
        assert "triggered a retrain" in check.stdout, check.stdout

        checks = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT])
        assert list(checks["tags.status"]) == ["degraded"]
        retrain = mlflow.search_runs(experiment_names=[RETRAIN_EXPERIMENT], order_by=["start_time DESC"]).iloc[0]
        assert retrain["tags.triggered_by"] == checks.iloc[0]["run_id"] and int(retrain["tags.feedback_rows"]) > 200
        after = current_champion(MODEL_NAME)
        assert after.version != before.version and after.tags["source"] == "retrain", check.stdout
        assert after.tags["lineage.data"] == str(SAMPLE) and after.tags["lineage.seed"] == "7"  # the tuned lineage
        assert "better on the trusted feedback" in after.tags["promotion"], after.tags["promotion"]
        wait_for(lambda: service.client.get("/health").json()["champion_version"] == str(after.version), 30,
                 "the service to swap to the promoted version")
        answer = service.client.post("/predict", json={"reviews": ["The biryani was stale and cold"]})
        assert answer.json()["predictions"][0]["model_version"] == str(after.version)
    finally:
        code = service.stop(signal.SIGINT)
    assert code == 0, service.output
