"""P(positive) that means what it says, for every family: a calibration map from the model's decision
(features · weights + bias, see `linear.decision_weights`) to a probability.

Fitted inside the refit, on the training reviews only: each of `FOLDS` copies of the pipeline is fitted
without one fold and gives that fold its decisions (out-of-fold, so as unseen as the traffic's), then
Platt's sigmoid and isotonic regression are each cross-validated on those decisions and the one with
the lower Brier score is fitted on all of them. The label stays the model's own decision (> 0), which
tuning chose for macro-F1; the probability is this map of the same decision, so it is monotone in it.

Stored as plain numbers (JSON beside the model, `ARTIFACT`), applied with numpy: the service and the
batch scorer need no pickled calibrator, and a version logged before calibration simply has none.
Isotonic is applied as sklearn's `IsotonicRegression(out_of_bounds="clip").predict` is: linear
interpolation between its thresholds, clipped at both ends (tests/model holds the two equal).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import expit
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import Pipeline

from review_sentiment.modeling.linear import decisions

ARTIFACT = "calibration.json"
SCHEMA = 1
FOLDS = 5
METHODS = ("sigmoid", "isotonic")


@dataclass(frozen=True)
class Calibration:
    """method "sigmoid": P = expit(x[0] · decision + y[0]); "isotonic": P = interp(decision, x, y)."""

    method: str
    x: list[float]
    y: list[float]
    cv_brier: dict[str, float]  # per method, on the out-of-fold decisions: why this method

    def probability(self, decision: np.ndarray) -> np.ndarray:
        decision = np.asarray(decision, float)
        if self.method == "sigmoid":
            return expit(self.x[0] * decision + self.y[0])
        return np.interp(decision, self.x, self.y)

    def to_dict(self) -> dict[str, object]:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, stored: dict) -> Calibration:
        """ValueError for anything but a calibration this code wrote."""
        try:
            made = cls(str(stored["method"]), [float(v) for v in stored["x"]], [float(v) for v in stored["y"]],
                       {str(k): float(v) for k, v in stored["cv_brier"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a calibration ({type(err).__name__}: {err})") from None
        x, y = np.array(made.x), np.array(made.y)
        shape_ok = len(x) == len(y) == 1 if made.method == "sigmoid" else len(x) == len(y) > 0
        values_ok = np.isfinite(x).all() and np.isfinite(y).all() and (
            made.method == "sigmoid" or (np.all(np.diff(x) >= 0) and np.all((y >= 0) & (y <= 1))))
        if stored.get("schema") != SCHEMA or made.method not in METHODS or not shape_ok or not values_ok:
            raise ValueError(f"not a calibration (schema {stored.get('schema')!r}, method {made.method!r}, "
                             f"{len(x)} finite, ordered points expected)")
        return made


def _fit(method: str, decision: np.ndarray, y: np.ndarray) -> Calibration:
    if method == "sigmoid":  # Platt: a one-feature logistic regression on the decision, unpenalised
        platt = LogisticRegression(C=np.inf).fit(decision.reshape(-1, 1), y)
        return Calibration(method, [float(platt.coef_[0, 0])], [float(platt.intercept_[0])], {})
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(decision, y)
    return Calibration(method, iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist(), {})


def _folds(y: np.ndarray, seed: int) -> StratifiedKFold:
    """`FOLDS` stratified folds, fewer when a label has fewer reviews (training needs two of each)."""
    return StratifiedKFold(max(2, min(FOLDS, int(np.bincount(y, minlength=2).min()))), shuffle=True,
                           random_state=seed)


def out_of_fold_decisions(tail: Pipeline, features, y: np.ndarray, seed: int) -> np.ndarray:
    """Each training review's decision by a copy of `tail` (TF-IDF → model) fitted without its fold."""
    folds = _folds(y, seed)
    fitted = cross_validate(clone(tail), features, y, cv=folds, return_estimator=True, return_indices=True)
    out = np.empty(len(y))
    for model, held in zip(fitted["estimator"], fitted["indices"]["test"], strict=True):
        out[held] = decisions(model, [features[i] for i in held])
    return out


def fit_calibration(tail: Pipeline, cleaned: list[str], y: np.ndarray, seed: int) -> Calibration:
    """The calibration of `tail`'s decisions, chosen and fitted on the training reviews alone."""
    y = np.asarray(y, int)
    decision = out_of_fold_decisions(tail, cleaned, y, seed)
    folds = _folds(y, seed)
    brier = {}
    for method in METHODS:
        losses = [brier_score_loss(y[test], _fit(method, decision[train], y[train]).probability(decision[test]))
                  for train, test in folds.split(decision.reshape(-1, 1), y)]
        brier[method] = round(float(np.mean(losses)), 6)
    best = min(METHODS, key=brier.__getitem__)  # sigmoid first: it wins a tie, being the smoother map
    return Calibration(**{**asdict(_fit(best, decision, y)), "cv_brier": brier})
