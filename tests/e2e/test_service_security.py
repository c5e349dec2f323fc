"""The running service against a hostile registry and hostile callers: a crafted champion is refused
while the last good one keeps serving, and off loopback /feedback needs the API key."""
from __future__ import annotations

import signal

import mlflow
import pytest

import serve_api
from review_sentiment.constants import API_KEY_ENV, CHAMPION, MODEL_NAME
from review_sentiment.tracking.model_loading import load_pipeline
from review_sentiment.tracking.registry import current_champion
from tests import crafted
from tests.e2e.served import Service
from tests.helpers import Store, wait_for


def test_a_crafted_champion_is_refused_and_the_last_good_one_serves(own_store: Store) -> None:
    good = current_champion(MODEL_NAME)
    service = Service.start(own_store.uri, own_store.path, "--poll-seconds", "0.5")
    client = mlflow.MlflowClient()
    try:
        wait_for(lambda: service.client.get("/health").json().get("status") == "ready", 60, "a loaded model")
        evil = crafted.trusting_system(load_pipeline(good))
        stale = crafted.with_other_cleaning(good)
        for version, reason in ((evil, f"asks to trust {crafted.SYSTEM}"), (stale, "other cleaning code")):
            client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)
            wait_for(lambda: reason in (service.client.get("/health").json()["detail"] or ""), 30,  # noqa: B023
                     f"/health to report v{version.version} refused")
            health = service.client.get("/health")
            assert (health.status_code, health.json()["status"]) == (200, "degraded")
            assert health.json()["champion_version"] == str(good.version)
            assert reason in service.client.get("/model").json()["problem"]
            answer = service.client.post("/predict", json={"reviews": ["Superb laptop", "Stopped working"]})
            assert answer.status_code == 200, answer.text
            assert {p["model_version"] for p in answer.json()["predictions"]} == {str(good.version)}
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, good.version)
        wait_for(lambda: service.client.get("/health").json()["status"] == "ready", 30, "ready again")
    finally:
        code = service.stop(signal.SIGINT)
    refusals = [line for line in service.output.splitlines() if "Could not refresh the champion" in line]
    assert code == 0 and "Traceback" not in service.output, service.output
    assert len(refusals) == 2 and f"{MODEL_NAME} v{evil.version}: its MLmodel asks to trust" in refusals[0], refusals


def test_off_loopback_feedback_needs_the_api_key(own_store: Store, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert serve_api.main(["--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --host 0.0.0.0 can be reached from other machines") and error.count("\n") == 1

    monkeypatch.setenv(API_KEY_ENV, "s3cret-key")
    service = Service.start(own_store.uri, own_store.path, "--host", "0.0.0.0")
    try:
        wait_for(lambda: service.client.get("/health").status_code == 200, 60, "a loaded model")
        assert "POST /feedback requires the header 'Authorization: Bearer <API key>'" in service.output
        prediction = service.client.post("/predict", json={"reviews": ["Superb laptop"]}).json()["predictions"][0]
        body = {"prediction_id": prediction["id"], "label": "positive"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic czNjcmV0LWtleQ=="}):
            refused = service.client.post("/feedback", json=body, headers=headers)
            assert (refused.status_code, refused.headers.get("WWW-Authenticate")) == (401, "Bearer"), refused.text
        assert service.client.post("/feedback", json=body,
                                   headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    finally:
        code = service.stop(signal.SIGINT)
    assert code == 0 and "s3cret-key" not in service.output, service.output
