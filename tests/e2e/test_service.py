"""The prediction service as a user meets it: a real server process on a free loopback port,
serving a model trained on the sample from a temporary MLflow store."""
from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import review_sentiment
import serve_api
from review_sentiment.constants import CHALLENGER, CHAMPION, DEFAULT_PREDICTION_LOG, MODEL_NAME
from review_sentiment.data.reviews import load_texts
from review_sentiment.modeling.linear import predict_with_scores
from review_sentiment.monitoring.logged import read_log
from review_sentiment.serving.model_watcher import choose_variant
from review_sentiment.serving.schemas import PredictResponse
from review_sentiment.tracking.model_loading import load_calibration
from tests.e2e.served import running_server
from tests.helpers import (
    SAMPLE,
    Store,
    expected_from_models_logged_before_package,
    register_models_logged_before_package,
    rendered,
    wait_for,
)

CHALLENGER_SHARE = 0.3


@pytest.fixture(scope="module")
def store_copy(_tuned_once: Store, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A copy of the tuned registry (artifacts stay where they are): tests here move its aliases."""
    path = tmp_path_factory.mktemp("serving")
    return _tuned_once.copy_to(path)


@pytest.fixture(scope="module")
def server(store_copy: Store) -> Iterator[httpx.Client]:
    with running_server(store_copy.uri, store_copy.path, "--poll-seconds", "0.5",
                        "--challenger-share", str(CHALLENGER_SHARE)) as client:
        wait_for(lambda: client.get("/health").status_code == 200, timeout=60, what="a loaded model")
        yield client


@pytest.fixture
def registry_client(store_copy: Store, monkeypatch: pytest.MonkeyPatch) -> mlflow.MlflowClient:
    store_copy.activate(monkeypatch)
    return mlflow.MlflowClient()


def predict(server: httpx.Client, reviews: list, **extra) -> httpx.Response:
    return server.post("/predict", json={"reviews": reviews, **extra})


def test_health_and_model_describe_the_champion(server: httpx.Client, registry_client) -> None:
    champion = registry_client.get_model_version_by_alias(MODEL_NAME, "champion")
    health = server.get("/health").json()
    writer = health.pop("prediction_log")
    assert health == {"status": "ready", "detail": None, "champion_version": str(champion.version),
                      "challenger_version": None}
    assert (writer["state"], writer["queued_rows"], writer["failed_rows"]) == ("writing", 0, 0)
    info = server.get("/model").json()["champion"]
    assert (info["name"], info["version"], info["alias"]) == (MODEL_NAME, str(champion.version), "champion")
    assert info["family"] == champion.tags["family"] and info["data_digest"] == champion.tags["data_digest"]
    assert info["metrics"]["test_f1"] == pytest.approx(float(champion.tags["test_f1"]), abs=1e-4)


def test_predictions_match_the_models_own_predict(server: httpx.Client, registry_client) -> None:
    texts = load_texts(SAMPLE, "Review text").dropna().tolist()[:600]
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}@champion")
    champion = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion")
    labels, scores, probabilities = predict_with_scores(model, texts, load_calibration(champion))
    answer = predict(server, texts)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert PredictResponse.model_validate_json(answer.content).model_dump() == answer.json()  # the declared shape
    got = answer.json()["predictions"]
    assert [p["label_id"] for p in got] == labels.tolist()
    assert [p["label"] for p in got] == ["positive" if y else "negative" for y in labels]
    np.testing.assert_allclose([p["score"] for p in got], scores, atol=1e-4)
    np.testing.assert_allclose([p["probability"] for p in got], probabilities, atol=1e-4)  # calibrated P(positive)
    assert "calibrated P(positive)" in server.get("/model").json()["champion"]["probability_meaning"]
    assert "probability" in server.get("/openapi.json").json()["components"]["schemas"]["Prediction"]["properties"]
    champion = server.get("/health").json()["champion_version"]
    assert {(p["variant"], p["model_version"]) for p in got} == {("champion", champion)}
    assert len({p["id"] for p in got}) == len(texts)


def test_explain_names_the_terms_that_moved_the_decision(server: httpx.Client) -> None:
    answer = predict(server, ["Superb laptop, great battery life", "Waste of money, not good, very bad"], explain=True)
    assert PredictResponse.model_validate_json(answer.content).model_dump() == answer.json()
    good, bad = answer.json()["predictions"]
    for prediction in (good, bad):
        weights = [t["weight"] for t in prediction["explanation"]]
        assert 0 < len(weights) <= 5 and weights == sorted(weights, key=abs, reverse=True)
    assert good["label"] == "positive" and good["explanation"][0]["weight"] > 0
    assert bad["label"] == "negative" and bad["explanation"][0]["weight"] < 0
    assert predict(server, ["Superb laptop"]).json()["predictions"][0]["explanation"] is None


BAD_REQUESTS = [
    ("empty list", {"reviews": []}, 422, "reviews: List should have at least 1 item"),
    ("empty review", {"reviews": [""]}, 422, "reviews[0]: review is empty or whitespace only"),
    ("whitespace review", {"reviews": ["fine", " \t\n\u3000"]}, 422, "reviews[1]: review is empty"),
    ("number", {"reviews": ["fine", 3]}, 422, "reviews[1]: Input should be a valid string"),
    ("null item", {"reviews": [None]}, 422, "reviews[0]: Input should be a valid string"),
    ("nested list", {"reviews": [["a", "b"]]}, 422, "reviews[0]: Input should be a valid string"),
    ("string not list", {"reviews": "great laptop"}, 422, "reviews: Input should be a valid array"),
    ("wrong key", {"review": ["great laptop"]}, 422, "reviews: Field required"),
    ("unknown field", {"reviews": ["great"], "model_uri": "runs:/x/model"}, 422,
     "model_uri: Extra inputs are not permitted"),
    ("explain not bool", {"reviews": ["great"], "explain": "yes"}, 422, "explain: Input should be a valid boolean"),
    ("array body", ["great laptop"], 422, "body must be a JSON object"),
    ("too many", {"reviews": ["great"] * 1001}, 422, "reviews: List should have at most 1000 items"),
    ("too long", {"reviews": ["a" * 5001]}, 422, "reviews[0]: String should have at most 5000 characters"),
]


@pytest.mark.parametrize("body, status, message", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_bad_json_gets_a_one_line_4xx(server: httpx.Client, body, status: int, message: str) -> None:
    answer = server.post("/predict", json=body)
    assert (answer.status_code, answer.json()["detail"][:len(message)]) == (status, message)


RAW_BAD_REQUESTS = [
    ("not json", b"great laptop", "application/json", 422, "body is not valid JSON"),
    ("truncated json", b'{"reviews": ["great"', "application/json", 422, "body is not valid JSON"),
    ("lone surrogate", b'{"reviews": ["bad \\ud800 text"]}', "application/json", 422, "body is not valid JSON"),
    ("invalid utf-8", b'{"reviews": ["\xff\xfe"]}', "application/json", 422, "body is not valid JSON"),
    ("plain text", b'{"reviews": ["great"]}', "text/plain", 415, "send the body as JSON"),
    ("no body", b"", "application/json", 422, "body is not valid JSON"),
    ("huge body", b'{"reviews": ["' + b"a" * (9 * 1024 * 1024) + b'"]}', "application/json", 413,
     "request body is over"),
]


@pytest.mark.parametrize("body, content_type, status, message", [b[1:] for b in RAW_BAD_REQUESTS],
                         ids=[b[0] for b in RAW_BAD_REQUESTS])
def test_bad_bodies_get_a_one_line_4xx(server: httpx.Client, body: bytes, content_type: str, status: int,
                                       message: str) -> None:
    answer = server.post("/predict", content=body, headers={"Content-Type": content_type})
    detail = answer.json()["detail"]
    assert (answer.status_code, detail[:len(message)]) == (status, message)
    assert "\n" not in detail


CONTENT_TYPES = [  # FastAPI's rule: application/json or application/*+json, any case, any parameters
    ("APPLICATION/JSON", 200), ("application/json; charset=UTF-8", 200), ("application/vnd.api+json", 200),
    (None, 415), ("text/json", 415), ("application/json-seq", 415), ("multipart/form-data; boundary=json", 415)]


@pytest.mark.parametrize("content_type, status", CONTENT_TYPES, ids=[str(c) for c, _ in CONTENT_TYPES])
def test_a_body_is_json_by_its_content_type_as_fastapi_reads_it(server: httpx.Client, content_type: str | None,
                                                                status: int) -> None:
    """/predict reads its body itself (`schemas.sent_as_json` mirrors FastAPI's rule); /feedback leaves its body
    to FastAPI, so it pins the mirror: the same Content-Type is refused by both or by neither."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    assert server.post("/predict", content=b'{"reviews": ["great"]}', headers=headers).status_code == status
    fastapi_read = server.post("/feedback", content=b'{"prediction_id": "unknown", "label": "positive"}',
                               headers=headers).status_code
    assert (fastapi_read == 415) == (status == 415), fastapi_read


def test_a_byte_order_mark_is_ignored_and_a_long_caller_id_is_named_first(server: httpx.Client) -> None:
    body = '{"reviews": ["great"]}'.encode("utf-8-sig")
    assert server.post("/predict", content=body, headers={"Content-Type": "application/json"}).status_code == 200
    answer = server.post("/predict", json={"reviews": []}, headers={"X-Caller-Id": "x" * 201})
    assert (answer.status_code, answer.json()["detail"]) == (
        422, "x-caller-id: String should have at most 200 characters (and 1 more problem)")


def test_other_mistakes_get_4xx_and_the_server_stays_up(server: httpx.Client) -> None:
    assert predict(server, ["fine"]).status_code == 200
    assert server.post("/predict", json={"reviews": ["fine"]}, headers={"X-Caller-Id": "x" * 201}).status_code == 422
    assert server.get("/predict").status_code == 405
    assert server.post("/models/load", json={"uri": "/etc/passwd"}).status_code == 404
    assert server.get("/health").status_code == 200


def test_unicode_of_every_kind_is_answered(server: httpx.Client) -> None:
    reviews = ["Superb 😍👍🏽 laptop", "很好的笔记本", "ممتاز جدا", "e\u0301 cafe\u0301 naïve",
               "\u200b zero\u200bwidth", "NUL \x00 inside", "\u202eright to left", "\U0010ffff private",
               "🇮🇳🇮🇳", "ａｗｅｓｏｍｅ"]
    answer = predict(server, reviews, explain=True)
    assert answer.status_code == 200, answer.text
    assert [p["label"] in {"positive", "negative"} for p in answer.json()["predictions"]] == [True] * len(reviews)


def test_alias_move_is_picked_up_while_requests_keep_flowing(server: httpx.Client, registry_client) -> None:
    before = server.get("/health").json()["champion_version"]
    other = next(v.version for v in registry_client.search_model_versions(f"name='{MODEL_NAME}'")
                 if str(v.version) != before)

    def versions_seen() -> set[str]:
        answer = predict(server, ["good product", "bad battery", "okay"])
        assert answer.status_code == 200, answer.text
        return {p["model_version"] for p in answer.json()["predictions"]}

    stop, seen = threading.Event(), []

    def traffic() -> None:
        while not stop.is_set():
            seen.append(versions_seen())

    try:
        with ThreadPoolExecutor(2) as pool:
            senders = [pool.submit(traffic) for _ in range(2)]
            wait_for(lambda: len(seen) >= 20, 15, "traffic on the old champion")
            registry_client.set_registered_model_alias(MODEL_NAME, "champion", other)
            wait_for(lambda: server.get("/model").json()["champion"]["version"] == str(other), 15, "the new champion")
            answered = len(seen)
            wait_for(lambda: len(seen) >= answered + 20, 15, "traffic on the new champion")
            stop.set()
            [sender.result() for sender in senders]
        assert all(len(s) == 1 for s in seen)  # one request, one model, even mid-swap
        assert {v for s in seen for v in s} == {before, str(other)}
        assert seen[-1] == {str(other)}
    finally:
        registry_client.set_registered_model_alias(MODEL_NAME, "champion", before)
        wait_for(lambda: server.get("/health").json()["champion_version"] == before, 15, "the old champion back")


def test_ab_split_is_stable_per_caller_and_close_to_the_share(server: httpx.Client, registry_client) -> None:
    champion = server.get("/health").json()["champion_version"]
    challenger = next(v.version for v in registry_client.search_model_versions(f"name='{MODEL_NAME}'")
                      if str(v.version) != champion)
    registry_client.set_registered_model_alias(MODEL_NAME, "challenger", challenger)
    try:
        wait_for(lambda: server.get("/health").json()["challenger_version"] == str(challenger), 15, "the challenger")

        def variant(caller: str | None) -> tuple[str, str]:
            headers = {"X-Caller-Id": caller} if caller else {}
            p = server.post("/predict", json={"reviews": ["nice"]}, headers=headers).json()["predictions"][0]
            return p["variant"], p["model_version"]

        by_caller = {f"user-{i}": variant(f"user-{i}") for i in range(500)}
        assert {variant("user-7") for _ in range(5)} == {by_caller["user-7"]}
        assert set(by_caller.values()) == {("champion", champion), ("challenger", str(challenger))}
        share = sum(v == "challenger" for v, _ in by_caller.values()) / len(by_caller)
        assert share == pytest.approx(CHALLENGER_SHARE, abs=0.07)
        # Without an id each request is drawn afresh: the exact check is seeded, in tests/code. Here 300
        # real draws land on both sides and within 6 standard deviations (±0.16) of the share; either
        # failing by chance has a probability under 2e-9.
        anonymous = [variant(None) for _ in range(300)]
        assert set(anonymous) == {("champion", champion), ("challenger", str(challenger))}
        assert sum(v == "challenger" for v, _ in anonymous) / 300 == pytest.approx(CHALLENGER_SHARE, abs=0.16)
        assert server.get("/model").json()["challenger"]["version"] == str(challenger)
    finally:
        registry_client.delete_registered_model_alias(MODEL_NAME, "challenger")
        wait_for(lambda: server.get("/health").json()["challenger_version"] is None, 15, "the challenger to go")


def test_feedback_joins_its_prediction_and_reaches_the_report(server: httpx.Client, store_copy: Store,
                                                              registry_client, capsys: pytest.CaptureFixture) -> None:
    first, second = predict(server, ["Superb laptop, great battery", "Stopped working in a week"]).json()["predictions"]
    for prediction, truth in ((first, "positive"), (second, "negative")):
        answer = server.post("/feedback", json={"prediction_id": prediction["id"], "label": truth})
        assert answer.json() == {"prediction_id": prediction["id"], "label": truth}
    assert server.post("/feedback", json={"prediction_id": "no-such-id", "label": "positive"}).status_code == 404
    assert server.post("/feedback", json={"prediction_id": first["id"], "label": "great"}).status_code == 422
    again = server.post("/feedback", json={"prediction_id": first["id"], "label": "positive"})
    assert again.status_code == 200  # a client's retry of the same label
    changed = server.post("/feedback", json={"prediction_id": first["id"], "label": "negative"})
    assert changed.status_code == 409 and "never overwritten" in changed.json()["detail"]

    log = read_log(store_copy.path / DEFAULT_PREDICTION_LOG).set_index("id")
    assert log.loc[first["id"], "true_label"] == 1 and log.loc[second["id"], "true_label"] == 0
    assert log.loc[first["id"], "review"] == "Superb laptop, great battery"
    assert serve_api.main(["report", "--prediction-log", str(store_copy.path / DEFAULT_PREDICTION_LOG)]) == 0
    report = capsys.readouterr().out
    champion_row = next(line for line in report.splitlines() if line.startswith("champion ")).split()
    assert int(champion_row[-2]) >= 2 and champion_row[-1] == "n/a"  # feedback counted; too few for a macro-F1
    assert "macro-F1 n/a: fewer than 30 fed-back labels, or one label only" in report
    assert "Agreement between variants: " in report
    whole = read_log(store_copy.path / DEFAULT_PREDICTION_LOG)  # the repeated and the refused label are not rows
    on_record = len(whole) + int(whole["true_label"].notna().sum())
    assert server.get("/health").json()["prediction_log"]["written_rows"] == on_record


def test_prediction_ids_are_unguessable(server: httpx.Client) -> None:
    """The time in ms (12 hex digits), then 128 random bits (32): nothing to guess another caller's id from."""
    ids = [p["id"] for _ in range(20) for p in predict(server, ["fine", "bad"]).json()["predictions"]]
    assert all(re.fullmatch(r"[0-9a-f]{44}", i) for i in ids), ids[:4]
    assert len({i[12:20] for i in ids}) == len(ids)  # no two share even the first 32 random bits
    assert ids == sorted(ids, key=lambda i: i[:12])  # in the order they were made


def scrape(server: httpx.Client) -> Counter:
    """/metrics, parsed by Prometheus' own text parser: value by (sample name, labels)."""
    answer = server.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return Counter({(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                    for family in text_string_to_metric_families(answer.text) for sample in family.samples})


def test_metrics_parse_and_count_what_was_sent(server: httpx.Client) -> None:
    before = scrape(server)
    answers = [predict(server, reviews) for reviews in (["Superb laptop"], ["Stopped working", "great"], [])]
    assert [a.status_code for a in answers] == [200, 200, 422]
    after = scrape(server)
    after.subtract(before)
    requests = {status: after["http_requests_total", (("handler", "/predict"), ("method", "POST"), ("status", status))]
                for status in ("200", "422")}
    assert requests == {"200": 2, "422": 1}
    assert after["http_request_duration_seconds_count", (("handler", "/predict"), ("method", "POST"))] == 3
    made = Counter((p["label"], p["model_version"], p["variant"]) for a in answers[:2] for p in a.json()["predictions"])
    counted = {key: after["predictions_total", (("label", key[0]), ("model_version", key[1]), ("variant", key[2]))]
               for key in made}
    assert counted == dict(made)
    assert (after["prediction_log_written_rows_total", ()], after["prediction_log_queued_rows", ()]) == (3, 0)


def test_api_docs_work_with_no_network(server: httpx.Client) -> None:
    info = server.get("/openapi.json").json()["info"]
    assert "8 MiB" in info["description"], info
    assert info["version"] == review_sentiment.__version__ == importlib.metadata.version("review-sentiment")
    for page in ("/docs", "/redoc"):
        html = server.get(page).text
        assert "https://" not in html and "cdn" not in html.lower(), html
    dom = rendered(f"{server.base_url}/docs")
    assert 'class="swagger-ui' in dom and 'data-path="/predict"' in dom and 'data-path="/feedback"' in dom, dom[-2000:]


def test_page_is_served_and_needs_nothing_from_the_internet(server: httpx.Client) -> None:
    page = server.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<textarea" in page.text and 'fetch("/predict"' in page.text
    assert "http://" not in page.text and "https://" not in page.text and 'src="//' not in page.text


def test_openapi_schema_has_no_server_errors_under_fuzzing(server: httpx.Client, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(schemathesis), "run", f"{server.base_url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "150", "--seed", "1", "--workers", "1", "--generation-database", "none",
         "--phases", "examples,coverage,fuzzing", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert server.get("/health").status_code == 200


def test_without_a_champion_the_service_is_up_but_not_ready(tmp_path: Path) -> None:
    with running_server(f"sqlite:///{tmp_path / 'empty.db'}", tmp_path, "--poll-seconds", "0.5") as client:
        wait_for(lambda: client.get("/health").json()["detail"] != "loading the model", 30, "the first registry check")
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["detail"] == "no version of FlipkartSentimentModel holds alias 'champion' yet"
        assert predict(client, ["great"]).status_code == 503


def test_models_logged_before_the_package_are_served_as_before(store: Store) -> None:
    """Champion and challenger both pre-package versions; a caller id picks each side."""
    versions = register_models_logged_before_package()
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, versions["LogisticRegression"])
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, versions["LinearSVM"])
    callers = {variant: next(f"caller-{i}" for i in range(1000) if choose_variant(f"caller-{i}", 0.5) == variant)
               for variant in (CHAMPION, CHALLENGER)}
    expected = expected_from_models_logged_before_package()
    with running_server(store.uri, store.path, "--challenger-share", "0.5") as server:
        wait_for(lambda: server.get("/health").json().get("challenger_version") is not None, 60, "both models")
        for variant, family in ((CHAMPION, "LogisticRegression"), (CHALLENGER, "LinearSVM")):
            answer = server.post("/predict", json={"reviews": [t for t in expected["texts"] if t.strip()]},
                                 headers={"X-Caller-Id": callers[variant]})
            assert answer.status_code == 200, answer.text
            got = answer.json()["predictions"]
            before = [(label, score) for text, label, score in zip(
                expected["texts"], expected[family]["labels"], expected[family]["scores"], strict=True) if text.strip()]
            assert {(p["variant"], p["model_version"]) for p in got} == {(variant, versions[family])}
            assert [p["label_id"] for p in got] == [label for label, _ in before]
            np.testing.assert_allclose([p["score"] for p in got], [score for _, score in before], rtol=0, atol=5e-5)
