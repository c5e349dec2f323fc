"""What a fitted sentiment pipeline gets judged and explained by: macro-F1, reports, top terms."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score
from sklearn.pipeline import Pipeline

from review_data import LABEL_NAMES


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    return float(f1_score(y_true, y_pred, average="macro"))


def report_text(y_true: Sequence[int], y_pred: Sequence[int]) -> str:
    return classification_report(y_true, y_pred, target_names=list(LABEL_NAMES), digits=4)


def confusion_figure(y_true: Sequence[int], y_pred: Sequence[int], title: str):
    """A labelled confusion-matrix figure (matplotlib is imported only when one is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay(confusion_matrix(y_true, y_pred, labels=[0, 1]),
                                     display_labels=list(LABEL_NAMES))
    display.plot(cmap="Blues", colorbar=False)
    display.ax_.set_title(title)
    return display.figure_


def positive_scores(pipeline: Pipeline, texts) -> np.ndarray:
    """P(positive) where the model has probabilities (LR, NB); for Linear SVM the logistic of its
    margin — monotone in the decision and 0.5 at the boundary, but not calibrated."""
    if hasattr(pipeline, "predict_proba"):
        return pipeline.predict_proba(texts)[:, 1]
    return 1.0 / (1.0 + np.exp(-pipeline.decision_function(texts)))


def term_weights(pipeline: Pipeline) -> tuple[np.ndarray, np.ndarray] | None:
    """Vocabulary and per-term push towards 'positive', for linear models (None for Naive Bayes)."""
    model = pipeline.named_steps["model"]
    if not hasattr(model, "coef_"):
        return None
    return pipeline.named_steps["tfidf"].get_feature_names_out(), model.coef_.ravel()


def top_terms(pipeline: Pipeline, n: int = 20) -> dict[str, list[list[object]]] | None:
    """The n most positive and most negative terms with their coefficients."""
    weights = term_weights(pipeline)
    if weights is None:
        return None
    terms, coef = weights
    order = np.argsort(coef)
    pick = lambda idx: [[str(terms[i]), round(float(coef[i]), 4)] for i in idx]  # noqa: E731
    return {"positive": pick(order[::-1][:n]), "negative": pick(order[:n])}
