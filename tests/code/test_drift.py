"""The drift check against real shifts: reviews of another domain, held-out reviews of the training
domain (the false-alarm rate over 40 windows), feedback that contradicts the model, too little data."""
from __future__ import annotations

import functools
import importlib.util
import json
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from review_sentiment.data.reviews import load_reviews
from review_sentiment.modeling.families import build_pipeline
from review_sentiment.modeling.linear import predict_with_scores
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.monitoring.drift import (
    DEGRADED,
    DRIFT,
    ESTIMATED_DROP,
    INSUFFICIENT,
    MIN_WINDOW,
    OK,
    Window,
    check,
)
from review_sentiment.monitoring.profile import (
    SAMPLE_VALUES,
    ReferenceProfile,
    UnusableProfile,
    reference_profile,
    vocabulary,
)
from review_sentiment.monitoring.report import F1_HISTORY, html_report
from tests.helpers import PROJECT_DIR, SAMPLE, STRONG, the_split

WINDOW = 200


@functools.cache
def generator():
    """data/make_sample_reviews.py, the sample's generator (a script, not part of the package)."""
    path = PROJECT_DIR / "data" / "make_sample_reviews.py"
    spec = importlib.util.spec_from_file_location("make_sample_reviews", path)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained():
    split = the_split()
    pipeline = build_pipeline("LogisticRegression", STRONG, 0).fit(split.X_train, split.y_train)
    profile = reference_profile(pipeline, load_reviews(SAMPLE).usable_text, split.y_train, split.X_test)
    return pipeline, profile, macro_f1(split.y_test, pipeline.predict(split.X_test))


def served(pipeline, reviews: list[str]) -> Window:
    """What the service would have logged for these reviews, with no feedback yet."""
    labels, scores, _ = predict_with_scores(pipeline, reviews)
    return Window(reviews, labels, scores, np.full(len(reviews), np.nan), np.array([], int), np.array([], int),
                  np.array([]))


def reviews_of(domain: str, seed: int, rows: int = WINDOW) -> list[str]:
    return [row["Review text"] for row in generator().sample_rows(rows, seed, domain) if row["Review text"]]


def test_the_profile_holds_what_monitoring_compares(trained) -> None:
    pipeline, profile, _ = trained
    split = the_split()
    assert set(profile.vocabulary) == vocabulary(pipeline) and all(" " not in t for t in profile.vocabulary)
    assert len(profile.lengths) == min(len(load_reviews(SAMPLE).usable_text), SAMPLE_VALUES)
    assert len(profile.scores) == len(split.X_test) and all(0 <= s <= 1 for s in profile.scores)
    assert all(0 <= share <= 1 for share in profile.oov_shares) and 0 <= profile.empty_share < 0.05
    assert profile.positive_label_share == pytest.approx(split.y_train.mean())
    assert ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile  # as logged and read


def test_reviews_of_another_domain_are_input_drift(trained) -> None:
    pipeline, profile, test_f1 = trained
    reviews = reviews_of("food", seed=5)
    result = check(served(pipeline, reviews), profile, test_f1)
    drifted = {f.measure: f for f in result.findings if f.drifted}
    print("\n".join(f"{f.measure}: reference {f.reference:.3f}, now {f.current:.3f}, statistic {f.statistic:.3f}, "
                    f"p {f.p_value:.2g}" for f in result.findings))
    assert result.status == DRIFT
    assert {"out-of-vocabulary share", "non-ASCII share"} <= drifted.keys()
    words = {term for term, _ in result.new_terms[:5]}
    assert words & {"tasted", "yummy", "fresh", "biryani", "portion", "thali", "gravy"}, words
    written = " ".join(reviews).lower()
    assert all(f" {word}" in f" {written}" for word in words), "shown as users wrote them, not as stems"


def test_held_out_reviews_of_the_training_domain_rarely_alarm(trained) -> None:
    """40 windows of new reviews from the training distribution: at most 5% may be anything but ok."""
    pipeline, profile, test_f1 = trained
    statuses = [check(served(pipeline, reviews_of("electronics", seed)), profile, test_f1).status
                for seed in range(100, 140)]
    alarms = len(statuses) - statuses.count(OK)
    print(f"false alarms: {alarms} of {len(statuses)} windows")
    assert alarms / len(statuses) <= 0.05, statuses


def test_feedback_that_contradicts_the_model_is_degraded(trained) -> None:
    pipeline, profile, test_f1 = trained
    reviews = reviews_of("electronics", seed=7)
    window = served(pipeline, reviews)
    said = window.labels[:120]
    truth = np.where(np.random.default_rng(0).random(120) < 0.4, 1 - said, said)  # 40% contradict the model
    result = check(Window(reviews, window.labels, window.scores, window.probabilities, truth, said,
                          np.full(len(said), np.nan)), profile, test_f1)
    performance = next(f for f in result.findings if f.kind == "performance")
    assert result.status == DEGRADED and result.feedback == 120
    assert performance.current < performance.statistic < test_f1  # the interval's top is below the test F1


def test_too_little_data_or_no_reference_is_never_an_alarm(trained) -> None:
    pipeline, profile, test_f1 = trained
    few = reviews_of("food", seed=3, rows=MIN_WINDOW // 2)
    assert check(served(pipeline, few), profile, test_f1).status == INSUFFICIENT
    result = check(served(pipeline, reviews_of("food", seed=3)), None, test_f1)
    assert (result.status, result.note) == (INSUFFICIENT, "no reference profile for this version")


def test_a_profile_it_cannot_use_is_said_and_odd_windows_are_no_alarm(trained) -> None:
    """A malformed profile is 'unusable' in the note, not a traceback; reviews that clean to nothing
    give no out-of-vocabulary distribution to test (the empty share does the telling); a reference
    text empty after cleaning (None in the profile) is drawn and tested like the others."""
    pipeline, profile, test_f1 = trained
    window = served(pipeline, reviews_of("electronics", seed=9))
    logged = profile.to_dict()
    for broken, why in (({k: v for k, v in logged.items() if k != "lengths"}, "no lengths"),
                        (logged | {"oov_shares": [None] * len(profile.oov_shares)}, "no value in oov_shares"),
                        (logged | {"weights": [1, 2]}, "weights and values differ"),
                        (logged | {"schema": 9}, "schema 9; this code reads 1 and 2"),
                        (logged | {"scores": 3}, "malformed"), ([1, 2], "malformed: a list")):
        with pytest.raises(UnusableProfile) as unusable:
            ReferenceProfile.from_dict(broken)
        result = check(window, unusable.value, test_f1)
        assert result.status == INSUFFICIENT and why in result.note, result.note
    emoji = served(pipeline, ["👍🔥"] * MIN_WINDOW)
    oov = next(f for f in check(emoji, profile, test_f1).findings if f.measure == "out-of-vocabulary share")
    assert not oov.drifted and oov.p_value is None
    with_empty = replace(profile, oov_shares=[None, *profile.oov_shares[1:]])
    result = check(window, with_empty, test_f1)
    assert result.status == OK
    assert "data:image/png;base64," in html_report("t", {"v1": result}, {"v1": with_empty}, {"v1": window},
                                                   pd.DataFrame(columns=["time", *F1_HISTORY]))


def test_an_estimate_far_below_the_test_f1_is_a_finding_that_trusted_feedback_outweighs(trained) -> None:
    pipeline, profile, test_f1 = trained
    window = served(pipeline, reviews_of("electronics", seed=8))
    unsure = np.where(window.labels == 1, 0.55, 0.45)  # probabilities that say the model is barely better than chance
    doubtful = Window(window.reviews, window.labels, window.scores, unsure, np.array([], int), np.array([], int),
                      np.array([]))
    result = check(doubtful, profile, test_f1)
    estimate = next(f for f in result.findings if f.measure == "estimated macro-F1")
    assert result.status == ESTIMATED_DROP and estimate.drifted and estimate.statistic < test_f1 - 0.05
    said = window.labels[:60]
    confirmed = Window(window.reviews, window.labels, window.scores, unsure, said, said, unsure[:60])
    assert len(set(said.tolist())) == 2 and check(confirmed, profile, test_f1).status == OK
