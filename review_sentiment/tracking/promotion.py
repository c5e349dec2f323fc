"""When `champion` moves: only to a model at least as good as the current champion, and only by a
compare-and-set. The tuning run and the scheduled retrain both promote through here.

The two models are scored on the candidate's test reviews that the champion did not train on either
(every logged model records its training reviews), so a champion trained on older data that overlaps
today's test split is not flattered. The comparison runs unlocked; the alias then moves under the
store's alias lock only if it still points where it pointed when the comparison began, otherwise the
candidate is compared again with the new champion.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline

from review_sentiment.constants import CHAMPION
from review_sentiment.data.reviews import review_hashes
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.tracking.alias_lock import alias_lock
from review_sentiment.tracking.model_loading import RefusedModel, load_pipeline
from review_sentiment.tracking.model_logging import training_reviews
from review_sentiment.tracking.registry import current_champion

MIN_COMPARED_REVIEWS = 30  # fewer unseen test reviews than this (or one class only) is no fair comparison


@dataclass(frozen=True)
class Promotion:
    """Whether `champion` moved to the candidate, why (printed and logged as-is), and which version
    held the alias when this promotion finished."""

    promoted: bool
    reason: str
    champion: str


@dataclass(frozen=True)
class Comparison:
    """Both models' macro-F1 on the same test reviews, unseen by either."""

    candidate_f1: float
    champion_f1: float
    reviews: int
    note: str  # which reviews, in words

    @property
    def candidate_wins(self) -> bool:
        return self.candidate_f1 >= self.champion_f1  # ties promote: the newer model, on newer data


def promote_if_better(name: str, candidate: ModelVersion, X_test: pd.Series, y_test: Sequence[int]) -> Promotion:
    """Move `champion` to `candidate` if it scores at least the champion's macro-F1 on the candidate's
    test reviews that the champion did not train on; `X_test` and `y_test` are the candidate's. A champion
    this code refuses to load (foreign types, other cleaning) cannot be scored here, so it is replaced."""
    version, candidate_model = str(candidate.version), None
    while True:
        champion = current_champion(name)
        if champion is None:
            if _move_alias(name, version, expected=None):
                return Promotion(True, f"v{version} is the first champion", version)
            continue
        if str(champion.version) == version:
            return Promotion(True, f"v{version} is already the champion", version)  # a retried step
        try:
            champion_model = load_pipeline(champion)
        except RefusedModel as refused:
            if _move_alias(name, version, expected=str(champion.version)):
                return Promotion(True, f"v{version} promoted: the champion is refused here ({refused})", version)
            continue
        if candidate_model is None:  # loaded once, however often the champion moves meanwhile
            candidate_model = load_pipeline(candidate)
        compared = compare(candidate_model, champion_model, champion.run_id, X_test, np.asarray(y_test))
        if compared is None:
            return Promotion(False, f"v{version} not promoted: fewer than {MIN_COMPARED_REVIEWS} test reviews of "
                                    f"both labels left unseen by champion v{champion.version}", str(champion.version))
        scores = (f"test F1 {compared.candidate_f1:.4f} vs champion v{champion.version} "
                  f"{compared.champion_f1:.4f} on {compared.note}")
        if not compared.candidate_wins:
            return Promotion(False, f"v{version} not promoted: {scores}", str(champion.version))
        if _move_alias(name, version, expected=str(champion.version)):
            return Promotion(True, f"v{version} promoted: {scores}", version)


def compare(candidate: Pipeline, champion: Pipeline, champion_run: str, X_test: pd.Series,
            y_test: np.ndarray) -> Comparison | None:
    """Score both on the test reviews the champion (logged by `champion_run`) did not train on (the
    candidate never saw its own test split); None when too few of them, or of one label only, remain."""
    seen = training_reviews(champion_run)
    if seen is None:
        keep = np.ones(len(X_test), dtype=bool)
        note = "the full test split (the champion predates training-review records)"
    else:
        keep = ~np.isin(review_hashes(X_test), seen)
        note = f"{int(keep.sum())} of {len(X_test)} test reviews that neither model trained on"
    texts, labels = X_test[keep].tolist(), y_test[keep]
    if len(texts) < MIN_COMPARED_REVIEWS or len(set(labels.tolist())) < 2:
        return None
    candidate_f1, champion_f1 = (macro_f1(labels, model.predict(texts)) for model in (candidate, champion))
    return Comparison(candidate_f1, champion_f1, len(texts), note)


def _move_alias(name: str, version: str, expected: str | None) -> bool:
    """Compare-and-set: point `champion` at `version` if it still points at `expected` (None: unset)."""
    with alias_lock(name):
        current = current_champion(name)
        if (None if current is None else str(current.version)) != expected:
            return False
        mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)
        return True

