"""Feedback poisoning, as an attacker on loopback would try it against a service without an API key: the
real service answers reviews of the kind the champion was trained on, then every label comes back
flipped. Anonymous labels are kept but trusted with nothing; trusted or not, a model trained on them is
judged on the lineage's protected set, which they cannot reach. The champion and its quality stay."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import mlflow
import numpy as np

from review_sentiment.constants import DEFAULT_PREDICTION_LOG, MODEL_NAME, MONITORING_EXPERIMENT
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.tracking.registry import current_champion
from tests.code.test_drift import generator
from tests.e2e.served import Service
from tests.helpers import PROJECT_DIR, Store, wait_for


def orchestrate(store: Store, prefect_api: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI on the session's Prefect server (as on a stack), not a temporary one of its own each time."""
    done = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--prediction-log",
         str(store.path / DEFAULT_PREDICTION_LOG), *args],
        cwd=store.path, env=dict(os.environ, MLFLOW_TRACKING_URI=store.uri, PREFECT_API_URL=prefect_api),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_flipped_labels_from_anyone_never_replace_the_champion(own_store: Store, prefect_server: str) -> None:
    before = current_champion(MODEL_NAME)
    fresh = [r for r in generator().sample_rows(1000, 99) if r["Review text"]]  # never seen by any model
    fresh_truth = np.array([int(r["Ratings"] >= 3) for r in fresh])
    attack = [r for r in generator().sample_rows(420, 123) if r["Review text"]][:400]  # the champion's kind
    service = Service.start(own_store.uri, own_store.path, "--poll-seconds", "0.5")  # no API key: anyone may post

    def clean_f1() -> float:
        said = [p["label_id"] for start in range(0, len(fresh), 100) for p in service.client.post(
            "/predict", json={"reviews": [r["Review text"] for r in fresh[start:start + 100]]}).json()["predictions"]]
        return macro_f1(fresh_truth, said)

    def poison(texts: list[str], labels: np.ndarray) -> None:
        for start in range(0, len(texts), 20):
            answer = service.client.post("/predict", json={"reviews": texts[start:start + 20]})
            for prediction, label in zip(answer.json()["predictions"], labels[start:start + 20], strict=True):
                flipped = "negative" if label == 1 else "positive"
                assert service.client.post("/feedback", json={"prediction_id": prediction["id"],
                                                              "label": flipped}).status_code == 200

    try:
        wait_for(lambda: service.client.get("/health").json().get("status") == "ready", 60, "a loaded model")
        f1_before = clean_f1()
        texts, labels = [r["Review text"] for r in attack], np.array([int(r["Ratings"] >= 3) for r in attack])

        poison(texts[:40], labels[:40])  # 40 flipped labels, even if the operator trusted anonymous ones
        few = orchestrate(own_store, prefect_server, "retrain", "--with-feedback", "--trust-anonymous-feedback")
        assert "fewer than the quorum of 50: training on the file alone" in few.stdout + few.stderr
        assert current_champion(MODEL_NAME).version == before.version

        poison(texts[40:], labels[40:])  # 400 in all
        check = orchestrate(own_store, prefect_server, "monitor")
        assert "Not trusted: 400 fed-back labels given without an API key" in check.stdout + check.stderr
        [status] = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT])["tags.status"]
        assert status == "ok" and "Retrain: nothing to do" in check.stdout, check.stdout
        assert current_champion(MODEL_NAME).version == before.version, check.stdout

        trusted = orchestrate(own_store, prefect_server, "retrain", "--with-feedback", "--trust-anonymous-feedback")
        out = trusted.stdout + trusted.stderr
        assert "not promoted" in out and "worse on the protected set beyond noise" in out, out[-3000:]
        assert current_champion(MODEL_NAME).version == before.version
        wait_for(lambda: service.client.get("/health").json()["champion_version"] == str(before.version), 10,
                 "the service still on the champion")
        assert clean_f1() == f1_before
    finally:
        code = service.stop(signal.SIGINT)
    assert code == 0, service.output
