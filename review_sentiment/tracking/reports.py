"""What a tuning run logs beside its metrics for people to read: the classification report, the
confusion matrix as a picture, and the terms that push hardest each way."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix
from sklearn.pipeline import Pipeline

from review_sentiment.constants import LABEL_NAMES
from review_sentiment.modeling.linear import term_weights
from review_sentiment.modeling.metrics import Labels

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def report_text(y_true: Labels, y_pred: Labels) -> str:
    return classification_report(y_true, y_pred, target_names=list(LABEL_NAMES), digits=4)


def confusion_figure(y_true: Labels, y_pred: Labels, title: str) -> Figure:
    """A labelled confusion-matrix figure (matplotlib is imported only when one is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.metrics import ConfusionMatrixDisplay

    display = ConfusionMatrixDisplay(confusion_matrix(y_true, y_pred, labels=[0, 1]),
                                     display_labels=list(LABEL_NAMES))
    display.plot(cmap="Blues", colorbar=False)
    display.ax_.set_title(title)
    return display.figure_


def reliability_figure(y_true: Labels, probability: Sequence[float] | np.ndarray, title: str,
                       bins: int = 15) -> Figure:
    """Share of positives against the mean calibrated probability, per equal-count bin: on the diagonal
    is calibrated."""
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.calibration import CalibrationDisplay

    display = CalibrationDisplay.from_predictions(y_true, probability, n_bins=bins, strategy="quantile",
                                                  name="calibrated P(positive)")
    display.ax_.set(title=title, xlabel="mean predicted probability of positive (per bin)",
                    ylabel="share of reviews that are positive")
    return display.figure_


def top_terms(pipeline: Pipeline, n: int = 20) -> dict[str, list[list[object]]]:
    """The n most positive and most negative terms with their weights."""
    terms, coef = term_weights(pipeline)
    order = np.argsort(coef)

    def pick(indices: np.ndarray) -> list[list[object]]:
        return [[str(terms[i]), round(float(coef[i]), 4)] for i in indices]

    return {"positive": pick(order[::-1][:n]), "negative": pick(order[:n])}
