"""Loading held to our trusted types and our cleaning: crafted registry versions are refused in one line,
by the same loader the service, the batch scorer and promotion use; ours load as before."""
from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.entities.model_registry import ModelVersion

import text_cleaning
from review_sentiment.constants import CHAMPION, MODEL_NAME
from review_sentiment.modeling.calibration import ARTIFACT as CALIBRATION_ARTIFACT
from review_sentiment.tracking.model_loading import RefusedModel, load_calibration, load_pipeline
from review_sentiment.tracking.model_logging import CLEANING_DIGEST_TAG, cleaning_digest
from review_sentiment.tracking.promotion import promote_if_better
from tests import crafted
from tests.helpers import STRONG, WEAK, Store, registered, the_split


def test_our_versions_load_and_record_the_cleaning_they_were_trained_with(store: Store) -> None:
    split = the_split()
    version = registered(split.X_train, split.y_train, STRONG)
    assert version.tags[CLEANING_DIGEST_TAG] == cleaning_digest()
    texts = split.X_test.tolist()
    ours = load_pipeline(version).predict(texts)
    assert np.array_equal(ours, mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version.version}").predict(texts))


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[[Path], Store]) -> Iterator[ModelVersion]:
    """One version of ours, in a store of this module's, that each crafted version is made from."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        new_store(tmp_path_factory.mktemp("crafted")).activate(monkeypatch)
        split = the_split()
        yield registered(split.X_train, split.y_train, WEAK)


@pytest.mark.parametrize(("craft", "reason"), [
    (lambda fitted, _: crafted.trusting_system(fitted), f"its MLmodel asks to trust {crafted.SYSTEM}; only "),
    (lambda fitted, _: crafted.hiding_system(fitted), f"its model file holds types we do not trust: {crafted.SYSTEM}"),
    (lambda _, ours: crafted.with_other_cleaning(ours), "it was trained with other cleaning code .digest "),
    (lambda fitted, _: crafted.pickled(fitted), "saved as 'cloudpickle', not skops"),
    (lambda _, ours: crafted.garbled(ours), "its model file is not a skops file"),
    (lambda _, ours: crafted.malformed(ours), "not a logged sklearn model .AttributeError"),
], ids=["trusts-os.system", "hides-os.system", "other-cleaning", "pickle", "garbled", "malformed"])
def test_a_crafted_version_is_refused_with_one_line(ours: ModelVersion, craft, reason: str) -> None:
    version = craft(load_pipeline(ours), ours)
    with pytest.raises(RefusedModel, match=f"^{MODEL_NAME} v{version.version}: {reason}") as refused:
        load_pipeline(version)
    assert "\n" not in str(refused.value)


def test_only_the_cleaning_code_counts_not_its_comments_or_layout(tmp_path: Path) -> None:
    code = tmp_path / "text_cleaning.py"
    shutil.copytree(text_cleaning.NLTK_DATA_DIR, tmp_path / "data" / text_cleaning.NLTK_DATA_DIR.name)
    source = Path(text_cleaning.__file__).read_text(encoding="utf-8")
    code.write_text(source.replace("\n\n\n", "\n\n\n# a note for the next reader\n\n"), encoding="utf-8")
    assert code.read_text(encoding="utf-8") != source and cleaning_digest(tmp_path) == cleaning_digest()
    code.write_text(source + "\nNEGATIONS_KEPT = False\n", encoding="utf-8")
    assert cleaning_digest(tmp_path) != cleaning_digest()


def test_a_champion_this_code_refuses_is_replaced_by_a_candidate_it_can_score(store: Store) -> None:
    split = the_split()
    ours = registered(split.X_train, split.y_train, STRONG)
    stale = crafted.with_other_cleaning(ours)
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, CHAMPION, stale.version)
    candidate = registered(split.X_train, split.y_train, WEAK)  # weaker than `stale`, yet scorable here
    promotion = promote_if_better(MODEL_NAME, candidate, split.X_test, split.y_test)
    assert promotion.promoted and promotion.champion == str(candidate.version), promotion
    assert f"the champion is refused here ({MODEL_NAME} v{stale.version}: it was trained with other" in promotion.reason


def test_a_version_without_calibration_has_none_and_a_broken_one_is_refused(store: Store) -> None:
    """Versions logged before calibration serve without a probability; a calibration.json that is not
    one this code wrote (here: thresholds out of order, which np.interp would silently misread) is
    refused in one line rather than turned into wrong probabilities."""
    split = the_split()
    version = registered(split.X_train, split.y_train, WEAK)
    assert load_calibration(version) is None
    mlflow.MlflowClient().log_dict(version.run_id, {"schema": 1, "method": "isotonic", "x": [3.0, 1.0],
                                                    "y": [0.0, 1.0], "cv_brier": {}}, CALIBRATION_ARTIFACT)
    with pytest.raises(RefusedModel, match=rf"v{version.version}: its calibration.json is unusable .not a calibration"):
        load_calibration(version)
