"""The project's one metric. Training selects by it, promotion compares by it and the A/B report
judges fed-back predictions by it, so all three must compute it the same way."""
from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import f1_score


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Macro-F1: the minority (negative) class counts as much as the majority."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))
