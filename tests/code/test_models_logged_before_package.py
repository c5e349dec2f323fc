"""Models registered by the code before the package still load and score exactly as they did:
the logged format (raw text in, `text_cleaning.clean_texts` trusted by skops) did not change."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from review_sentiment.constants import MODEL_NAME
from review_sentiment.modeling.linear import predict_with_scores
from review_sentiment.serving.served_model import load_served
from tests.helpers import Store, expected_from_models_logged_before_package, register_models_logged_before_package

EXPECTED = expected_from_models_logged_before_package()


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory,
             new_store: Callable[[Path], Store]) -> Iterator[dict[str, str]]:
    """Both models registered once into one store; the tests only read it."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        new_store(tmp_path_factory.mktemp("before-package")).activate(monkeypatch)
        yield register_models_logged_before_package()


@pytest.mark.parametrize("family", ["LogisticRegression", "LinearSVM"])
def test_pyfunc_and_sklearn_flavours_score_as_before(versions: dict[str, str], family: str) -> None:
    uri = f"models:/{MODEL_NAME}/{versions[family]}"
    texts, before = EXPECTED["texts"], EXPECTED[family]
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert pyfunc.predict(texts).tolist() == before["labels"]
    assert pyfunc.predict(pd.DataFrame({"review": texts})).tolist() == before["labels"]
    labels, scores, _ = predict_with_scores(mlflow.sklearn.load_model(uri), texts)
    assert labels.tolist() == before["labels"]
    np.testing.assert_allclose(scores, before["scores"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["LogisticRegression", "LinearSVM"])
def test_the_service_loader_scores_as_before(versions: dict[str, str], family: str) -> None:
    version = mlflow.MlflowClient().get_model_version(MODEL_NAME, versions[family])
    served = load_served(version, alias=None)
    scored = served.score(EXPECTED["texts"], explain=True)
    assert served.family == family
    assert scored.label_ids == EXPECTED[family]["labels"]
    np.testing.assert_allclose(scored.scores, EXPECTED[family]["scores"], rtol=0, atol=5e-5)  # served: 4 decimals
    assert served.calibration is None and scored.probabilities is None  # logged before calibration: said so
    assert served.describe()["probability_meaning"].startswith("none: this version was logged before calibration")
