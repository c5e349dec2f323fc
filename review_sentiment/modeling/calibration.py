"""P(positive) that means what it says, for every family: a calibration map from the model's decision
(features · weights + bias, see `linear.decision_weights`) to a probability.

Fitted inside the refit, on the training reviews only: each of `FOLDS` copies of the pipeline (or one per
CV fold of the tuning run: `calibration_folds`) is fitted
without one fold and gives that fold its decisions (out-of-fold, so as unseen as the traffic's; the
copies' TF-IDF is derived from the folds' counts, `fold_counts`, which a tuning run has made already), then
Platt's sigmoid and isotonic regression are each cross-validated on those decisions and the one with
the lower Brier score is fitted on all of them. The label stays the model's own decision (> 0), which
tuning chose for macro-F1; the probability is this map of the same decision, so it is monotone in it.

Stored as plain numbers (JSON beside the model, `ARTIFACT`), applied with numpy: the service and the
batch scorer need no pickled calibrator, and a version logged before calibration simply has none.
Isotonic is applied as sklearn's `IsotonicRegression(out_of_bounds="clip").predict` is: linear
interpolation between its thresholds, clipped at both ends (tests/model holds the two equal).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator, clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from review_sentiment.modeling.fold_counts import CountedFolds, counted, tfidf_features
from review_sentiment.modeling.linear import decision_values

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


def fold_count(y: np.ndarray, tuned: CountedFolds | None = None, wanted: int = FOLDS) -> int:
    """How many folds a calibration is fitted on: those of `tuned` (a tuning run's CV folds of the same
    texts), else `wanted` (a retrain: its tuning run's), fewer when a label has fewer reviews (training
    needs two of each)."""
    return len(tuned.labels) if tuned is not None else max(2, min(wanted, int(np.bincount(y, minlength=2).min())))


def calibration_folds(clean_train: Sequence[str], y: np.ndarray, seed: int, tuned: CountedFolds | None = None,
                      wanted: int = FOLDS) -> CountedFolds:
    """The folds a calibration is fitted on (`fold_count`): `tuned` itself (made with this seed; nothing is
    counted again), else stratified ones counted now."""
    return tuned if tuned is not None else counted(clean_train, y, folds=fold_count(y, None, wanted), seed=seed)


def out_of_fold_decisions(model: BaseEstimator, params: dict[str, Any], folds: CountedFolds, rows: int
                          ) -> np.ndarray:
    """Each training review's decision by a copy of `model` fitted without its fold, on the TF-IDF
    (`params`) a vectorizer fitted without it gives: what a copy of the whole pipeline fitted so decides."""
    out = np.empty(rows)
    for counts, (y_train, _), held in zip(folds.counts[params["tfidf_ngram_max"]], folds.labels, folds.held,
                                          strict=True):
        X_train, X_held = tfidf_features(counts, params)
        out[held] = decision_values(clone(model).fit(X_train, y_train), X_held)
    return out


def fit_calibration(model: BaseEstimator, params: dict[str, Any], folds: CountedFolds, y: np.ndarray,
                    decision: np.ndarray | None = None) -> Calibration:
    """The calibration of the decisions of `model` (a classifier, as configured for the pipeline) on the
    TF-IDF of `params`, chosen and fitted on the training reviews alone (`folds`: theirs, from
    `calibration_folds`; `y`: their labels; `decision`: their `out_of_fold_decisions` when a tuning trial
    of this configuration on these folds made them already)."""
    y = np.asarray(y, int)
    if decision is None:
        decision = out_of_fold_decisions(model, params, folds, len(y))
    brier = {}
    for method in METHODS:
        losses = []
        for held in folds.held:
            fitted_on = np.ones(len(y), bool)
            fitted_on[held] = False
            losses.append(brier_score_loss(y[held], _fit(method, decision[fitted_on], y[fitted_on]
                                                         ).probability(decision[held])))
        brier[method] = round(float(np.mean(losses)), 6)
    best = min(METHODS, key=brier.__getitem__)  # sigmoid first: it wins a tie, being the smoother map
    return Calibration(**{**asdict(_fit(best, decision, y)), "cv_brier": brier})
