"""The models under test: the one `--model-uri` names (in MLFLOW_TRACKING_URI's store), so these
tests can gate any registered version, else the versions tuned on the sample."""
from __future__ import annotations

import mlflow
import pytest
from sklearn.pipeline import Pipeline

from review_sentiment.constants import DEFAULT_MODEL_URI, MODEL_NAME
from review_sentiment.modeling.families import FAMILIES
from review_sentiment.tracking.registry import records_of
from tests.helpers import Store


def _load(uris: dict[str, str], store: Store | None) -> dict[str, Pipeline]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        if store is not None:
            store.activate(monkeypatch)
        return {label: mlflow.sklearn.load_model(uri) for label, uri in uris.items()}


@pytest.fixture(scope="session")
def sentiment_model(request: pytest.FixtureRequest) -> Pipeline:
    """The model the behavioural tests judge: `--model-uri`, else the champion tuned on the sample."""
    uri = request.config.getoption("--model-uri")
    if uri:
        return _load({uri: uri}, None)[uri]
    return _load({"champion": DEFAULT_MODEL_URI}, request.getfixturevalue("_tuned_once"))["champion"]


@pytest.fixture(scope="session")
def every_model(request: pytest.FixtureRequest) -> dict[str, Pipeline]:
    """`--model-uri`'s model, else one tuned version per family: what the scorer must reproduce."""
    uri = request.config.getoption("--model-uri")
    if uri:
        return _load({uri: uri}, None)
    store: Store = request.getfixturevalue("_tuned_once")
    uris = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        store.activate(monkeypatch)
        for family in FAMILIES:
            [version] = [v for v, r in records_of(MODEL_NAME) if r.family == family]  # the run registers one each
            uris[family] = f"models:/{MODEL_NAME}/{version.version}"
    return _load(uris, store)
