"""Calibrated probabilities: fitted on the training reviews only, applied exactly as sklearn's own
calibrators would, monotone in the decision, and close to the truth on reviews no model saw."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate

import text_cleaning
from review_sentiment.data.reviews import load_reviews
from review_sentiment.modeling.calibration import Calibration, calibration_folds, fit_calibration, out_of_fold_decisions
from review_sentiment.modeling.families import build_pipeline
from review_sentiment.modeling.fast_scorer import FastScorer
from review_sentiment.modeling.fold_counts import counted
from review_sentiment.modeling.linear import predict_with_scores
from review_sentiment.modeling.metrics import expected_calibration_error
from review_sentiment.tracking.records import Lineage
from review_sentiment.training.release import TrainingData, fingerprint
from tests.helpers import SAMPLE, STRONG, decisions, the_split

PARAMS = {"LogisticRegression": STRONG, "NaiveBayes": STRONG | {"model_alpha": 0.1, "model_fit_prior": False},
          "LinearSVM": STRONG | {"model_C": 0.5}}


def test_stored_maps_give_what_sklearns_calibrators_give() -> None:
    rng = np.random.default_rng(0)
    decision, y = rng.normal(size=400), rng.integers(0, 2, 400)
    y[decision > 1] = 1
    unseen = np.concatenate([rng.normal(scale=3, size=200), [-50.0, 50.0]])  # and far outside the fitted range
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(decision, y)
    ours = Calibration("isotonic", iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist(), {})
    np.testing.assert_allclose(ours.probability(unseen), iso.predict(unseen), atol=1e-12)
    platt = LogisticRegression(C=np.inf).fit(decision.reshape(-1, 1), y)
    ours = Calibration("sigmoid", [float(platt.coef_[0, 0])], [float(platt.intercept_[0])], {})
    np.testing.assert_allclose(ours.probability(unseen), platt.predict_proba(unseen.reshape(-1, 1))[:, 1], atol=1e-12)


def test_a_stored_calibration_round_trips_and_anything_else_is_refused() -> None:
    made = Calibration("isotonic", [-1.0, 0.0, 2.0], [0.1, 0.5, 0.9], {"sigmoid": 0.1, "isotonic": 0.09})
    assert Calibration.from_dict(made.to_dict()) == made
    for broken in ({}, {"schema": 1, "method": "magic", "x": [1], "y": [1], "cv_brier": {}},
                   {"schema": 1, "method": "sigmoid", "x": [1, 2], "y": [1], "cv_brier": {}},
                   {"schema": 9, "method": "sigmoid", "x": [1], "y": [1], "cv_brier": {}}, [1, 2],
                   {"schema": 1, "method": "isotonic", "x": [3, 1, 2], "y": [0, 0.5, 1], "cv_brier": {}},
                   {"schema": 1, "method": "isotonic", "x": [1, 2], "y": [0, 7], "cv_brier": {}},
                   {"schema": 1, "method": "sigmoid", "x": [float("inf")], "y": [0], "cv_brier": {}}):
        with pytest.raises(ValueError, match="not a calibration"):
            Calibration.from_dict(broken)


@pytest.mark.parametrize("family", sorted(PARAMS))
def test_every_family_is_calibrated_on_reviews_it_never_saw(family: str) -> None:
    """Chosen and fitted on the training reviews; judged on the held-out ones: the probability is
    monotone in the decision (labels unchanged), the scorer gives the same, and it is far closer to
    the truth than the family's own score."""
    split = the_split()
    pipeline = build_pipeline(family, PARAMS[family], 0).fit(split.X_train, split.y_train)
    folds = calibration_folds(pipeline[0].transform(split.X_train), split.y_train, 0)
    calibration = fit_calibration(pipeline[-1], PARAMS[family], folds, split.y_train)
    assert set(calibration.cv_brier) == {"sigmoid", "isotonic"}
    assert calibration.cv_brier[calibration.method] == min(calibration.cv_brier.values())
    labels, scores, probability = predict_with_scores(pipeline, split.X_test, calibration)
    order = np.argsort(decisions(pipeline, split.X_test))
    assert np.all(np.diff(probability[order]) >= -1e-12)
    np.testing.assert_allclose(FastScorer.of(pipeline).predict(split.X_test.tolist(), calibration)[2], probability,
                               atol=1e-9)
    before, after = (expected_calibration_error(split.y_test, p) for p in (scores, probability))
    print(f"{family}: {calibration.method}, ECE {before:.3f} → {after:.3f}")
    assert after <= 0.06 and after < before


@pytest.mark.parametrize("family", sorted(PARAMS))
def test_out_of_fold_decisions_are_those_of_pipelines_fitted_without_each_fold(family: str) -> None:
    """Derived from the folds' counts, bit for bit what cross-validating the TF-IDF → model pipeline on
    the cleaned reviews gives (as the calibration was fitted before it reused the tuning's counts)."""
    split = the_split()
    pipeline = build_pipeline(family, PARAMS[family], 0)
    cleaned, y = pipeline[0].transform(split.X_train), np.asarray(split.y_train, int)
    folds = calibration_folds(cleaned, y, 0)
    fitted = cross_validate(clone(pipeline[1:]), cleaned, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            return_estimator=True, return_indices=True)
    expected = np.empty(len(y))
    for model, held in zip(fitted["estimator"], fitted["indices"]["test"], strict=True):
        expected[held] = decisions(model, [cleaned[i] for i in held])
    assert np.array_equal(out_of_fold_decisions(pipeline[-1], PARAMS[family], folds, len(y)), expected)


def test_a_versions_fingerprint_names_the_folds_its_calibration_was_fitted_on() -> None:
    """A model calibrated on a tuning run's 3 CV folds is not the one calibrated on 5: an identical-version
    look-up must not take one for the other. The same folds are the same model, whether a tuning run
    counted them or a retrain repeats its tuning run's."""
    split = the_split()
    cleaned = text_cleaning.clean_texts(split.X_train.tolist())
    lineage = Lineage.of(SAMPLE, "Review text", "Ratings", 0.3, 42)
    def data(tuned: int | None, retrain: int = 5) -> TrainingData:
        folds = None if tuned is None else counted(cleaned, split.y_train, folds=tuned, seed=42)
        return TrainingData(load_reviews(SAMPLE), split, lineage, "digest", text_cleaning.clean_texts, folds=folds,
                            calibration_fold_count=retrain)

    prints = {(tuned, retrain): fingerprint("NaiveBayes", PARAMS["NaiveBayes"], 42, data(tuned, retrain))
              for tuned, retrain in ((None, 5), (5, 5), (3, 5), (None, 3))}
    assert prints[None, 5] == prints[5, 5] != prints[3, 5] == prints[None, 3]
