"""A route group mounted alone on an app of its own, with only the state it depends on: the service's
routes do not need the whole service to be tried."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from review_sentiment.serving.model_watcher import ModelWatcher
from review_sentiment.serving.routes import feedback, status
from review_sentiment.serving.routes.state import ServiceState
from review_sentiment.tracking.model_uri import ModelRef


def app_with(*routers, api_key: str | None = None) -> TestClient:
    app = FastAPI()
    app.state.service = ServiceState(
        ModelWatcher(ModelRef.parse("models:/FlipkartSentimentModel@champion"), None, poll_seconds=60), None, 0.0,
        api_key, Counter("predictions", "", ["label", "model_version", "variant"], registry=CollectorRegistry()))
    for router in routers:
        app.include_router(router)
    return TestClient(app)


def test_the_status_routes_alone_say_nothing_is_loaded_yet() -> None:
    client = app_with(status.router)
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert health.json()["prediction_log"] == {"state": "off"}
    assert client.get("/model").json()["champion"] is None and client.get("/model").json()["poll_seconds"] == 60


def test_the_feedback_route_alone_needs_a_log() -> None:
    answer = app_with(feedback.router).post("/feedback", json={"prediction_id": "x", "label": "positive"})
    assert answer.status_code == 503 and "keeps no prediction log" in answer.json()["detail"]
