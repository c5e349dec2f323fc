"""A registered model version as the prediction service holds it: the fitted pipeline, ready to
label, score and explain raw reviews, plus what `/model` tells about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline

from review_sentiment.constants import LABEL_NAMES
from review_sentiment.modeling.calibration import Calibration
from review_sentiment.modeling.fast_scorer import FastScorer
from review_sentiment.modeling.linear import strongest_terms, term_weights
from review_sentiment.tracking.model_loading import load_calibration, load_pipeline
from review_sentiment.tracking.records import UNKNOWN, VersionRecord, run_id_of

EXPLAIN_TERMS = 5


@dataclass(frozen=True)
class Scored:
    """Predictions for a batch of reviews, in request order."""

    labels: list[str]
    label_ids: list[int]
    scores: list[float]
    probabilities: list[float] | None  # calibrated P(positive); None for a version logged without calibration
    explanations: list[list[tuple[str, float]]] | None


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    alias: str | None
    family: str
    run_id: str
    data_digest: str | None
    metrics: dict[str, float]
    calibration: Calibration | None = field(repr=False)
    pipeline: Pipeline = field(repr=False)
    scorer: FastScorer = field(repr=False)
    terms: np.ndarray = field(repr=False)
    weights: np.ndarray = field(repr=False)
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def score_kind(self) -> str:
        if hasattr(self.pipeline, "predict_proba"):
            return "the model's own probability of positive (not calibrated: see probability)"
        return "logistic of the SVM margin (0.5 at the decision boundary; not a probability: see probability)"

    @property
    def probability_kind(self) -> str:
        if self.calibration is None:
            return "none: this version was logged before calibration (predictions carry no probability)"
        return (f"calibrated P(positive) ({self.calibration.method} calibration fitted on out-of-fold decisions "
                f"of the training reviews)")

    def score(self, texts: list[str], explain: bool = False) -> Scored:
        labels, scores, probabilities = self.scorer.predict(texts, self.calibration)
        ids = labels.tolist()
        explanations = None
        if explain:
            features = self.pipeline[:-1].transform(texts)
            explanations = strongest_terms(features, self.terms, self.weights, EXPLAIN_TERMS)
        return Scored([LABEL_NAMES[i] for i in ids], ids, np.round(scores, 4).tolist(),
                      None if probabilities is None else np.round(probabilities, 4).tolist(), explanations)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "family": self.family,
                "score_meaning": self.score_kind,
                "probability_meaning": self.probability_kind, "metrics": self.metrics, "data_digest": self.data_digest,
                "run_id": self.run_id, "loaded_at": self.loaded_at}


def load_served(version: ModelVersion, alias: str | None) -> ServedModel:
    """Load one registry version's fitted pipeline (for probabilities and coefficients), held to our
    trusted types and our cleaning; RefusedModel says why not."""
    pipeline = load_pipeline(version)
    terms, weights = term_weights(pipeline)
    run = mlflow.MlflowClient().get_run(run_id_of(version))
    record = VersionRecord.of(version)
    return ServedModel(
        name=version.name, version=str(version.version), alias=alias,
        family=record.family if record.family != UNKNOWN else type(pipeline[-1]).__name__,
        run_id=run_id_of(version), data_digest=record.data_digest or None,
        metrics={k: round(v, 4) for k, v in sorted(run.data.metrics.items())},
        calibration=load_calibration(version), pipeline=pipeline, scorer=FastScorer.of(pipeline), terms=terms,
        weights=weights,
    )
