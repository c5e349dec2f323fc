"""One monitoring check of one served version: its logged traffic against its reference profile.

Three kinds of drift, each a test whose false-alarm rate holds on real reviews, not only on
generated ones:
- input: review length and per-review out-of-vocabulary share, the non-ASCII and empty-after-cleaning
  shares;
- prediction: the score distribution and the positive share;
- performance: macro-F1 on the predictions that got trusted feedback, with a bootstrap 95% interval,
  against the version's test F1; and macro-F1 estimated without labels from the calibrated
  probabilities (`estimate`), whose interval's top below the test F1 minus `ESTIMATE_TOLERANCE` is a
  finding of its own (`estimated-drop`: reported, never acted on by itself).
Distributions (and the positive share, a distribution of 0s and 1s) are compared by a bootstrap test of
the Kolmogorov-Smirnov distance (`bootstrap_ks`): the window's distance from the reference against
the distances of `DRIFT_RESAMPLES` same-size windows drawn from the reference to resamples of the
reference itself, so the threshold comes from the reference, for this window size, with ties (an
out-of-vocabulary share is 0 for most reviews) and repeated texts counted as they are: a p-value from
the asymptotic KS formula assumes neither and, with a fixed effect size, alarmed on real reviews of
the same product. The non-ASCII and empty shares, measured on every row of the file, are compared by
Fisher's exact test. The six tests share a family-wise false-alarm rate of `FAMILY_ALPHA` (Bonferroni).
The reference is the version's profile: lengths and shares of every row of its file, out-of-vocabulary
shares and scores of rows that stand for its traffic (`data.reviews.traffic_like`). Fewer than
`MIN_WINDOW` predictions, or no reference, is `insufficient-data`, never an alarm.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from review_sentiment.modeling.metrics import label_codes, macro_f1, macro_f1_of_codes
from review_sentiment.monitoring.estimate import MIN_ROWS, Estimate, estimated_macro_f1
from review_sentiment.monitoring.profile import ReferenceProfile, TextStats, UnusableProfile, as_written, stored

OK, DRIFT, DEGRADED, INSUFFICIENT = "ok", "drift", "degraded", "insufficient-data"
SUSPECT = "suspect-feedback"  # trusted labels disagree sharply with the protected set while inputs did not move
ESTIMATED_DROP = "estimated-drop"  # the label-free estimate is clearly below the version's test F1
MIN_WINDOW = 100  # predictions of one version in one check
FEEDBACK_QUORUM = 50  # trusted fed-back labels (of both labels) before feedback may trigger, train or judge
SUSPECT_GAP = 0.15  # how far below the version's test F1 the feedback interval's top must be to be suspect
ESTIMATE_TOLERANCE = 0.05  # how far below the test F1 an estimate's interval top must be to be a finding
# Nominal 1% per check, so that docs/results.md's ≤ 5% holds on real traffic: a reference is one finite sample
# of the product's reviews, and real traffic differs from it by more than a resample does (resampling rows
# rather than texts, 7.5-12% of windows of the real file alarmed at 5%, 1.7-4.2% at 1%; resampling texts
# at 1%: 0 of 240, benchmarks/bench_monitoring_truth.py).
FAMILY_ALPHA = 0.01
DRIFT_TESTS = 6
ALPHA = FAMILY_ALPHA / DRIFT_TESTS
MAX_BINS = 100  # distributions are compared on at most this many bins of the pooled values' quantiles
BOOTSTRAP_RESAMPLES = 1000  # the feedback F1's interval
DRIFT_RESAMPLES = 1000  # a drift test alarms when the window is farther than every resample (p = 1/1001 < ALPHA)
assert 1 / (DRIFT_RESAMPLES + 1) < ALPHA, "too few resamples for a drift test ever to alarm"


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
    feedback that came in (on predictions of any age): the true label, what the model had said and the
    probability it gave (NaN where the version had no calibration)."""

    reviews: list[str]
    labels: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray
    feedback_truth: np.ndarray  # trusted labels only
    feedback_said: np.ndarray
    feedback_probabilities: np.ndarray
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
    estimate: Estimate | None = None  # of the window's macro-F1, without labels
    realized: tuple[float, Estimate | None] | None = None  # F1 on trusted feedback; estimated on the same rows


def bootstrap_ks(reference: np.ndarray, weights: np.ndarray, current: np.ndarray, seed: int) -> tuple[float, float]:
    """The KS distance between the window and the reference, and how often a window as large drawn from
    the reference lies as far from a resample of the reference: the p-value of a bootstrap test.
    `weights`: rows per reference value. The reference is a sample of texts, and a repeated text ("Good",
    33 rows) moves all its rows in or out together, so the resample draws texts, not rows (a Poisson
    bootstrap); drawing rows made the reference look surer of itself than it is and real traffic alarm.
    Values are binned on the pooled quantiles (every distinct value its own bin when there are few), and
    texts of one bin and weight are drawn together: thousands of resamples cost milliseconds. No NaN on
    either side (`distribution` leaves them out)."""
    edges = np.unique(np.quantile(np.concatenate([reference, current]), np.linspace(0, 1, MAX_BINS + 1)[1:-1]))
    bins = len(edges) + 1
    ref_bin, cur_bin = np.searchsorted(edges, reference, side="right"), np.searchsorted(edges, current, side="right")
    ref_share = np.bincount(ref_bin, weights, bins) / weights.sum()

    def distance(window_counts: np.ndarray, reference_mass: np.ndarray) -> np.ndarray:
        window_cdf = np.cumsum(window_counts, axis=-1) / len(current)
        reference_cdf = np.cumsum(reference_mass, axis=-1) / reference_mass.sum(axis=-1, keepdims=True)
        return np.abs(window_cdf - reference_cdf).max(axis=-1)

    observed = float(distance(np.bincount(cur_bin, minlength=bins), ref_share))
    rng = np.random.default_rng(seed)
    groups, texts = np.unique(np.stack([ref_bin, weights]), axis=1, return_counts=True)  # (bin, weight) pairs
    drawn = rng.poisson(texts, (DRIFT_RESAMPLES, len(texts))) * groups[1]
    in_bin = np.zeros((len(texts), bins))
    in_bin[np.arange(len(texts)), groups[0].astype(int)] = 1
    resampled = drawn @ in_bin
    resampled[resampled.sum(axis=1) == 0] = ref_share  # an empty resample (a tiny reference): the reference
    null = distance(rng.multinomial(len(current), ref_share, DRIFT_RESAMPLES), resampled)
    return observed, float((1 + np.sum(null >= observed - 1e-12)) / (DRIFT_RESAMPLES + 1))


def distribution(kind: str, measure: str, reference: Sequence[float | None], weights: Sequence[float] | None,
                 current: np.ndarray, seed: int, shares: bool = False) -> Finding:
    """A bootstrap KS test; the finding shows medians, or for 0/1 values (`shares`) the share of 1s."""
    ref = stored(reference)
    ref_weights = np.ones(len(ref)) if weights is None else np.asarray(weights, float)
    current = np.asarray(current, float)
    current, keep = current[~np.isnan(current)], ~np.isnan(ref)
    ref, ref_weights = ref[keep], ref_weights[keep]
    if not len(current):  # every review of the window was empty after cleaning: the empty share says so
        return Finding(kind, measure, float("nan"), float("nan"), 0.0, None, False)
    statistic, p_value = bootstrap_ks(ref, ref_weights, current, seed)
    if shares:
        then, now = float(np.average(ref, weights=ref_weights)), float(current.mean())
    else:
        order = np.argsort(ref)
        cumulative = np.cumsum(ref_weights[order])
        then = float(ref[order][np.searchsorted(cumulative, cumulative[-1] / 2)])  # the weighted median
        now = float(np.median(current))
    return Finding(kind, measure, then, now, statistic, p_value, p_value < ALPHA)


def share(kind: str, measure: str, reference: float, reference_n: int, current: np.ndarray) -> Finding:
    ref_k, cur_k = round(reference * reference_n), int(current.sum())
    # scipy-stubs types `table` as an ndarray; scipy documents (and converts) any array_like of ints
    test = stats.fisher_exact([[ref_k, reference_n - ref_k], [cur_k, len(current) - cur_k]])  # type: ignore[arg-type]
    now = cur_k / len(current)
    return Finding(kind, measure, reference, now, now - reference, float(test.pvalue), bool(test.pvalue < ALPHA))


def estimated(labels: np.ndarray, probabilities: np.ndarray, seed: int) -> Estimate | None:
    """Macro-F1 estimated from calibrated probabilities; None below `estimate.MIN_ROWS` of them (versions
    logged before calibration have none)."""
    known = ~np.isnan(probabilities)
    if known.sum() < MIN_ROWS:
        return None
    return estimated_macro_f1(labels[known], probabilities[known], seed)


def performance(window: Window, test_f1: float, seed: int) -> Finding | None:
    """Macro-F1 where trusted feedback came, if there is a quorum of it; degraded when even the interval's
    top is below the version's test F1."""
    truth, said = window.feedback_truth.astype(int), window.feedback_said.astype(int)
    if len(truth) < FEEDBACK_QUORUM or len(set(truth.tolist())) < 2:
        return None
    interval = stats.bootstrap((label_codes(truth, said),), lambda codes, axis: macro_f1_of_codes(codes, 0, 1, axis),
                               vectorized=True, method="percentile", n_resamples=BOOTSTRAP_RESAMPLES,
                               rng=np.random.default_rng(seed)).confidence_interval
    current = macro_f1(truth, said)
    return Finding("performance", "macro-F1 on feedback", test_f1, current, float(interval.high), None,
                   bool(interval.high < test_f1))


def check(window: Window, profile: ReferenceProfile | UnusableProfile | None, test_f1: float | None,
          seed: int = 0) -> Check:
    """The check's status and findings. Drift needs a profile (versions logged before profiles have
    none) and `MIN_WINDOW` predictions; performance needs the test F1 and `FEEDBACK_QUORUM` trusted labels, which
    may be for predictions of earlier windows (feedback comes late); the estimate needs calibrated
    probabilities. Trusted feedback far below the test F1 on inputs that did not move is `suspect-feedback`:
    wrong labels are likelier than a model that broke on the kind of reviews it was judged on."""
    feedback, findings, current, missing = len(window.feedback_truth), [], None, []
    if profile is None:
        missing.append("no reference profile for this version")
    elif isinstance(profile, UnusableProfile):
        missing.append(f"its reference profile is unusable ({profile})")
    elif len(window.reviews) < MIN_WINDOW:
        missing.append(f"{len(window.reviews)} prediction{'s' * (len(window.reviews) != 1)} since the last check; "
                       f"a drift check needs {MIN_WINDOW}")
    else:
        current = TextStats.of(window.reviews, frozenset(profile.vocabulary))
        findings = _drift(window, profile, current, seed)
    guess = estimated(window.labels, window.probabilities, seed) if len(window.reviews) >= MIN_WINDOW else None
    if test_f1 is not None and guess is not None:
        findings.append(Finding("performance", "estimated macro-F1", test_f1, guess.f1, guess.high, None,
                                guess.high < test_f1 - ESTIMATE_TOLERANCE))
    performed = None if test_f1 is None else performance(window, test_f1, seed)
    realized = None
    if performed is not None:
        findings.append(performed)
        realized = performed.current, estimated(window.feedback_said.astype(int), window.feedback_probabilities, seed)
    elif feedback:
        missing.append(f"{feedback} trusted fed-back label{'s' * (feedback != 1)}; feedback judges from "
                       f"{FEEDBACK_QUORUM} holding both labels")
    note = "; ".join(missing)
    if not findings:
        return Check(INSUFFICIENT, len(window.reviews), feedback, note=note)
    drifted = {f.measure for f in findings if f.drifted}
    if performed is not None and performed.drifted:
        status = DEGRADED
    elif drifted - {"estimated macro-F1"}:
        status = DRIFT
    else:  # trusted feedback at quorum, and not degraded, outweighs an estimate
        status = ESTIMATED_DROP if drifted and performed is None else OK
    inputs_measured_still = current is not None and not any(f.drifted for f in findings if f.kind == "input")
    if status == DEGRADED and performed is not None and inputs_measured_still \
            and performed.statistic < performed.reference - SUSPECT_GAP:
        status = SUSPECT  # the model is as good as ever on the protected set and sees the same inputs
    return Check(status, len(window.reviews), feedback, findings, _new_words(window, current), note, current, guess,
                 realized)


def _new_words(window: Window, current: TextStats | None) -> list[tuple[str, int]]:
    """The ten commonest words outside the model's vocabulary, as users wrote them, with their counts."""
    if current is None:
        return []
    top = current.unseen_terms.most_common(10)
    forms = as_written(window.reviews, [term for term, _ in top])
    return [(forms[term], count) for term, count in top]


def _drift(window: Window, profile: ReferenceProfile, current: TextStats, seed: int) -> list[Finding]:
    """The six tests."""
    weights = profile.weights
    return [
        distribution("input", "review length", profile.lengths, None, current.lengths, seed),
        distribution("input", "out-of-vocabulary share", profile.oov_shares, weights, current.oov_shares, seed),
        share("input", "non-ASCII share", profile.non_ascii_share, profile.traffic_reviews, current.non_ascii),
        share("input", "empty after cleaning", profile.empty_share, profile.traffic_reviews, current.empty),
        distribution("prediction", "score", profile.scores, weights, window.scores, seed),
        distribution("prediction", "positive share", profile.predicted, weights, window.labels, seed, shares=True),
    ]
