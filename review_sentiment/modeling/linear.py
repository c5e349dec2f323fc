"""The linear maths every family here shares, for scoring and explaining a fitted pipeline.

Logistic Regression, Naive Bayes and the linear SVM all decide on TF-IDF features · weights + bias:
training logs the strongest terms from it, batch scoring and the service score and explain with it.
"""
from __future__ import annotations

import numpy as np
from scipy import sparse
from sklearn.pipeline import Pipeline


def positive_scores(estimator, X) -> np.ndarray:
    """P(positive) where the model has probabilities (LR, NB); for Linear SVM the logistic of its
    margin — monotone in the decision and 0.5 at the boundary, but not calibrated."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X)[:, 1]
    return 1.0 / (1.0 + np.exp(-estimator.decision_function(X)))


def predict_with_scores(pipeline: Pipeline, texts) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive scores, cleaning and vectorising the texts once (calling predict and
    predict_proba on the pipeline would do both twice)."""
    features = pipeline[:-1].transform(texts)
    model = pipeline[-1]
    return model.predict(features), positive_scores(model, features)


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
