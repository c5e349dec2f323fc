"""The linear maths every family here shares, for scoring and explaining a fitted pipeline.

Logistic Regression, Naive Bayes and the linear SVM all decide on TF-IDF features · weights + bias:
training logs the strongest terms from it, batch scoring and the service score and explain with it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from sklearn.pipeline import Pipeline

if TYPE_CHECKING:
    from review_sentiment.modeling.calibration import Calibration


def positive_scores(estimator, X) -> np.ndarray:
    """P(positive) as the estimator gives it (LR, NB); for Linear SVM the logistic of its margin —
    monotone in the decision and 0.5 at the boundary. Neither is calibrated: see `calibration`."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, 1]
    return 1.0 / (1.0 + np.exp(-estimator.decision_function(X)))


def decision_values(model, features) -> np.ndarray:
    """features · weights + bias per row: what every family decides on (> 0 is positive)."""
    weights, bias = decision_weights(model)
    return np.asarray(features @ weights).ravel() + bias


def predict_with_scores(pipeline: Pipeline, texts, calibration: Calibration | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, positive scores and (with a `calibration.Calibration`) calibrated probabilities,
    cleaning and vectorising the texts once (predict, predict_proba… on the pipeline would each redo it)."""
    return predict_features_with_scores(pipeline[-1], pipeline[:-1].transform(texts), calibration)


def predict_features_with_scores(model, features, calibration: Calibration | None = None
                                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`predict_with_scores` of the model's features (the texts already vectorised)."""
    probabilities = None if calibration is None else calibration.probability(decision_values(model, features))
    return model.predict(features), positive_scores(model, features), probabilities


def decision_weights(model) -> tuple[np.ndarray, float]:
    """Per-feature weights and bias of the model's log-odds (or margin) for 'positive': the
    coefficients of the linear models; for Naive Bayes the log-likelihood ratio of the two classes
    and the prior log-odds. Every family here decides on features · weights + bias > 0."""
    if hasattr(model, "coef_"):
        return model.coef_.ravel(), float(model.intercept_[0])
    return (model.feature_log_prob_[1] - model.feature_log_prob_[0],
            float(model.class_log_prior_[1] - model.class_log_prior_[0]))


def term_weights(pipeline: Pipeline) -> tuple[np.ndarray, np.ndarray]:
    """Vocabulary and per-term push towards 'positive' per unit of TF-IDF."""
    return pipeline.named_steps["tfidf"].get_feature_names_out(), decision_weights(pipeline.named_steps["model"])[0]


def strongest_terms(features: sparse.csr_matrix, terms: np.ndarray, weights: np.ndarray,
                    n: int) -> list[list[tuple[str, float]]]:
    """Per row, the n terms whose TF-IDF weight × model weight moved the decision most
    (positive: towards 'positive'), strongest first."""
    rows = []
    for start, end in zip(features.indptr[:-1], features.indptr[1:], strict=True):
        indices = features.indices[start:end]
        push = features.data[start:end] * weights[indices]
        order = np.argsort(-np.abs(push))[:n]
        rows.append([(str(terms[indices[j]]), round(float(push[j]), 4)) for j in order])
    return rows
