"""When `champion` moves: only to a model at least as good as the current champion, both scored
on the same test split. The tuning run and the scheduled retrain both promote through here."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion

from review_sentiment.constants import CHAMPION
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.tracking.model_logging import as_model_input
from review_sentiment.tracking.registry import current_champion


@dataclass(frozen=True)
class Promotion:
    """Whether `champion` moved to a new version, and why (printed and logged as-is)."""

    promoted: bool
    reason: str


def promote_if_better(
    name: str, candidate: ModelVersion, candidate_f1: float, X_test: pd.Series, y_test: Sequence[int]
) -> Promotion:
    """Move `champion` to `candidate` if it scores at least the current champion's test macro-F1,
    both measured on this same test split."""
    client = mlflow.MlflowClient()
    champion = current_champion(name)
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        return Promotion(True, f"v{candidate.version} is the first champion")
    champion_model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
    champion_f1 = macro_f1(y_test, champion_model.predict(as_model_input(X_test)))
    scores = f"test F1 {candidate_f1:.4f} vs champion v{champion.version} {champion_f1:.4f} on this split"
    if candidate_f1 >= champion_f1:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        return Promotion(True, f"v{candidate.version} promoted: {scores}")
    return Promotion(False, f"v{candidate.version} not promoted: {scores}")
