"""Behavioural checks on the tuned champion: what any sentiment model here must get right."""
from __future__ import annotations

import mlflow
import pytest

import registry
from conftest import Store


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
