"""One monitoring check of one served version: its logged traffic against its reference profile.

Three kinds of drift, each a scipy.stats test plus a minimum effect, so that a harmless difference in
a large window is not an alarm:
- input: review length and per-review out-of-vocabulary share (two-sample Kolmogorov-Smirnov), the
  non-ASCII and empty-after-cleaning shares (Fisher's exact test);
- prediction: the score distribution (KS) and the positive share (Fisher);
- performance: macro-F1 on the predictions that got feedback, with a bootstrap 95% interval, against
  the version's test F1.
The six drift tests share a family-wise false-alarm rate of `FAMILY_ALPHA` (Bonferroni). Too few
predictions, or no reference, is `insufficient-data`, never an alarm.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.monitoring.profile import TextStats

OK, DRIFT, DEGRADED, INSUFFICIENT = "ok", "drift", "degraded", "insufficient-data"
SUSPECT = "suspect-feedback"  # trusted labels disagree sharply with the protected set while inputs did not move
MIN_WINDOW = 100  # predictions of one version in one check
FEEDBACK_QUORUM = 50  # trusted fed-back labels (of both labels) before feedback may trigger, train or judge
SUSPECT_GAP = 0.15  # how far below the version's test F1 the feedback interval's top must be to be suspect
FAMILY_ALPHA = 0.05
DRIFT_TESTS = 6
ALPHA = FAMILY_ALPHA / DRIFT_TESTS
MIN_KS = 0.1  # the largest gap between the two cumulative distributions
MIN_SHARE_CHANGE = 0.05  # in absolute share
BOOTSTRAP_RESAMPLES = 1000


@dataclass(frozen=True)
class Finding:
    kind: str  # "input", "prediction" or "performance"
    measure: str
    reference: float
    current: float
    statistic: float
    p_value: float | None
    drifted: bool


@dataclass(frozen=True)
class Window:
    """What the service logged for one version since the last check: its predictions, and the
    feedback that came in (on predictions of any age): the true label and what the model had said."""

    reviews: list[str]
    labels: np.ndarray
    scores: np.ndarray
    feedback_truth: np.ndarray  # trusted labels only
    feedback_said: np.ndarray
    untrusted_feedback: int = 0  # labels kept and counted, but trusted with nothing


@dataclass(frozen=True)
class Check:
    status: str
    predictions: int
    feedback: int
    findings: list[Finding] = field(default_factory=list)
    new_terms: list[tuple[str, int]] = field(default_factory=list)
    note: str = ""
    current: TextStats | None = field(default=None, repr=False)  # for the report's plots


def distribution(kind: str, measure: str, reference: Sequence[float], current: np.ndarray) -> Finding:
    current = current[~np.isnan(current)]
    test = stats.ks_2samp(reference, current)
    return Finding(kind, measure, float(np.median(reference)), float(np.median(current)), float(test.statistic),
                   float(test.pvalue), bool(test.pvalue < ALPHA and test.statistic >= MIN_KS))


def share(kind: str, measure: str, reference: float, reference_n: int, current: np.ndarray) -> Finding:
    ref_k, cur_k = round(reference * reference_n), int(current.sum())
    test = stats.fisher_exact([[ref_k, reference_n - ref_k], [cur_k, len(current) - cur_k]])
    now = cur_k / len(current)
    return Finding(kind, measure, reference, now, now - reference, float(test.pvalue),
                   bool(test.pvalue < ALPHA and abs(now - reference) >= MIN_SHARE_CHANGE))


def performance(window: Window, test_f1: float, seed: int) -> Finding | None:
    """Macro-F1 where trusted feedback came, if there is a quorum of it; degraded when even the interval's
    top is below the version's test F1."""
    truth, said = window.feedback_truth.astype(int), window.feedback_said.astype(int)
    if len(truth) < FEEDBACK_QUORUM or len(set(truth.tolist())) < 2:
        return None
    interval = stats.bootstrap((truth, said), macro_f1, paired=True, vectorized=False, method="percentile",
                               n_resamples=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(seed)).confidence_interval
    current = macro_f1(truth, said)
    return Finding("performance", "macro-F1 on feedback", test_f1, current, float(interval.high), None,
                   bool(interval.high < test_f1))


def check(window: Window, profile: dict | None, test_f1: float | None, seed: int = 0) -> Check:
    """The check's status and findings. Drift needs a profile (versions logged before profiles have
    none) and `MIN_WINDOW` predictions; performance needs the test F1 and `FEEDBACK_QUORUM` trusted labels, which
    may be for predictions of earlier windows (feedback comes late). Trusted feedback far below the test F1
    on inputs that did not move is `suspect-feedback`: wrong labels are likelier than a model that broke
    on the kind of reviews it was judged on."""
    feedback, findings, current = len(window.feedback_truth), [], None
    if profile is None:
        note = "no reference profile for this version"
    elif len(window.reviews) < MIN_WINDOW:
        note = f"{len(window.reviews)} predictions, fewer than {MIN_WINDOW}"
    else:
        note, current = "", TextStats.of(window.reviews, frozenset(profile["vocabulary"]))
        findings = _drift(window, profile, current)
    performed = None if test_f1 is None else performance(window, test_f1, seed)
    if performed is not None:
        findings.append(performed)
    if not findings:
        return Check(INSUFFICIENT, len(window.reviews), feedback, note=note)
    status = DEGRADED if performed is not None and performed.drifted else (
        DRIFT if any(f.drifted for f in findings) else OK)
    inputs_measured_still = current is not None and not any(f.drifted for f in findings if f.kind == "input")
    if status == DEGRADED and inputs_measured_still and performed.statistic < performed.reference - SUSPECT_GAP:
        status = SUSPECT  # the model is as good as ever on the protected set and sees the same inputs
    new_terms = [] if current is None else current.unseen_terms.most_common(10)
    return Check(status, len(window.reviews), feedback, findings, new_terms, note, current)


def _drift(window: Window, profile: dict, current: TextStats) -> list[Finding]:
    traffic_n, test_n = profile["traffic_reviews"], profile["test_reviews"]
    return [
        distribution("input", "review length", profile["lengths"], current.lengths),
        distribution("input", "out-of-vocabulary share", profile["oov_shares"], current.oov_shares),
        share("input", "non-ASCII share", profile["non_ascii_share"], traffic_n, current.non_ascii),
        share("input", "empty after cleaning", profile["empty_share"], traffic_n, current.empty),
        distribution("prediction", "score", profile["scores"], window.scores),
        share("prediction", "positive share", profile["positive_share"], test_n, window.labels.astype(bool)),
    ]
