"""Macro-F1 without labels: confidence-based performance estimation (CBPE, as NannyML names it).

With calibrated probabilities, a prediction of "positive" with P(positive) = p is a true positive with
probability p and a false positive otherwise; summed over a window that gives the expected confusion
matrix, and macro-F1 of it is the estimate (NannyML's CBPE computes the same from the same sums:
benchmarks/bench_monitoring_truth.py holds the two side by side). The 95% interval is that of the realized
macro-F1 if the probabilities are right: the true positives and the false negatives are sums of
independent Bernoulli(p), approximated as normal (their exact Poisson-binomial has the same mean and
variance), drawn `DRAWS` times. It says nothing of how wrong the calibration itself may be.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from review_sentiment.modeling.metrics import macro_f1_of_counts

DRAWS = 4000
MIN_ROWS = 100  # fewer predictions with a probability: no estimate


@dataclass(frozen=True)
class Estimate:
    f1: float
    low: float
    high: float
    rows: int


def _macro_f1(tp: np.ndarray, fn: np.ndarray, predicted_pos: int, predicted_neg: int) -> np.ndarray:
    """Macro-F1 of confusion matrices given by their true positives and false negatives."""
    return macro_f1_of_counts(tp, predicted_neg - fn, (predicted_pos - tp) + fn)


def estimated_macro_f1(predicted: np.ndarray, probability: np.ndarray, seed: int = 0) -> Estimate:
    """The expected macro-F1 of 0/1 `predicted` labels whose calibrated P(positive) is `probability`."""
    said = np.asarray(predicted, int) == 1
    p = np.asarray(probability, float)
    n_pos, n_neg = int(said.sum()), int((~said).sum())
    tp_mean, fn_mean = p[said].sum(), p[~said].sum()
    point = float(_macro_f1(np.array(tp_mean), np.array(fn_mean), n_pos, n_neg))
    rng = np.random.default_rng(seed)
    tp = np.clip(rng.normal(tp_mean, np.sqrt((p[said] * (1 - p[said])).sum()), DRAWS), 0, n_pos)
    fn = np.clip(rng.normal(fn_mean, np.sqrt((p[~said] * (1 - p[~said])).sum()), DRAWS), 0, n_neg)
    low, high = np.percentile(_macro_f1(tp, fn, n_pos, n_neg), [2.5, 97.5])
    return Estimate(point, float(low), float(high), len(p))
