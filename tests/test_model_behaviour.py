"""Behavioural checks on the tuned champion: what any sentiment model here must get right."""
from __future__ import annotations

import mlflow
import numpy as np
import pytest

import registry
from conftest import SAMPLE, Store
from evaluation import positive_scores, strongest_terms, term_weights
from fast_scoring import FastScorer
from model_families import FAMILIES
from review_data import load_texts


@pytest.fixture
def champion(tuned: Store):
    return mlflow.sklearn.load_model(f"models:/{registry.MODEL_NAME}@champion")


@pytest.mark.parametrize("text", ["not good", "Not good at all 😡", "worst product, waste of money",
                                  "battery is very poor and display is disappointing"])
def test_negative_reviews(champion, text: str) -> None:
    assert champion.predict([text]).tolist() == [0]


@pytest.mark.parametrize("text", ["good", "Excellent laptop, highly recommended 👍",
                                  "value for money, battery is awesome"])
def test_positive_reviews(champion, text: str) -> None:
    assert champion.predict([text]).tolist() == [1]


NAMES = ["Rahul Sharma", "Priya", "Flipkart Customer", "Ayesha Siddiqui"]
REVIEWS = ["Totally worth it, superb display", "Terrible build quality, returned it",
           "Not worth the money", "Loved the camera", "good but battery is below average"]


def test_a_reviewers_name_does_not_change_the_label(champion) -> None:
    base = champion.predict(REVIEWS).tolist()
    for name in NAMES:
        for signed in ([f"{r} - {name}" for r in REVIEWS], [f"{name}: {r}" for r in REVIEWS]):
            assert champion.predict(signed).tolist() == base, name


def test_noise_does_not_change_the_label(champion) -> None:
    base = champion.predict(REVIEWS).tolist()
    noisy = [f"<br>{r.upper()}!!! https://example.com/p/123 {i}" for i, r in enumerate(REVIEWS)]
    assert champion.predict(noisy).tolist() == base


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_scorer_gives_the_pipelines_own_labels_and_scores(tuned: Store, family: str) -> None:
    """The service's scorer must be the model, only faster: every family, every sample review,
    plus texts that leave no known term (the decision is then the bias alone)."""
    [version] = registry.versions_tagged(registry.MODEL_NAME, family=family)
    pipeline = mlflow.sklearn.load_model(f"models:/{registry.MODEL_NAME}/{version.version}")
    texts = load_texts(SAMPLE, "Review text").dropna().tolist() + ["", "!!!", "the and of", "😡", "zzzz qqqq"]
    labels, scores = FastScorer.of(pipeline).predict(texts)
    assert labels.tolist() == pipeline.predict(texts).tolist()
    np.testing.assert_allclose(scores, positive_scores(pipeline, texts), rtol=0, atol=1e-9)


def test_explanations_add_up_to_the_decision(tuned: Store) -> None:
    """Term pushes are features × weights: with every term listed they sum to decision − bias."""
    pipeline = mlflow.sklearn.load_model(f"models:/{registry.MODEL_NAME}@champion")
    features = pipeline[:-1].transform(REVIEWS)
    terms, weights = term_weights(pipeline)
    pushes = strongest_terms(features, terms, weights, n=10_000)
    scorer = FastScorer.of(pipeline)
    np.testing.assert_allclose([sum(w for _, w in row) for row in pushes],
                               scorer.decisions(REVIEWS) - scorer.bias, atol=1e-3)
