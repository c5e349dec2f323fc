"""Behavioural tests, CheckList style (as Made-With-ML uses them): minimum functionality on phrasings
the sample never uses, invariance to words the model knows but that should not matter, and the
direction the score moves when a clear clause is added. Any registered model can be judged:

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python -m pytest tests/model --model-uri models:/FlipkartSentimentModel/4
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from review_sentiment.data.reviews import load_reviews
from review_sentiment.modeling.linear import positive_scores
from tests.helpers import SAMPLE
from text_cleaning import clean_text

# Phrasings the sample teaches word for word: the negations must survive cleaning and count.
TAUGHT = [("not good", 0), ("Not good at all 😡", 0), ("worst product, waste of money", 0),
          ("battery is very poor and display is disappointing", 0), ("good", 1),
          ("Excellent laptop, highly recommended 👍", 1), ("value for money, battery is awesome", 1)]
# Phrasings it never uses, from words it knows.
NEGATIVE = ["Disappointing screen, poor sound", "The charging stopped after two days, very bad",
            "Cheap build, the tablet is not worth buying", "Horrible experience, returned the headphones",
            "not happy with the camera at all"]
POSITIVE = ["Superb camera and an excellent battery", "Fantastic speed, great value",
            "I recommend this laptop to everyone", "The screen is brilliant and the keyboard is smooth",
            "Good purchase, the display works well"]


def test_the_minimum_functionality_phrasings_are_not_in_the_sample() -> None:
    """Otherwise the tests below would check recall of training rows, not functionality."""
    sample = [text.lower() for text in load_reviews(SAMPLE).text]
    assert [p for p in NEGATIVE + POSITIVE if any(p.lower() in text for text in sample)] == []


@pytest.mark.parametrize("text, label", TAUGHT)
def test_phrasings_from_the_sample(sentiment_model: Pipeline, text: str, label: int) -> None:
    assert sentiment_model.predict([text]).tolist() == [label]


@pytest.mark.parametrize("text", NEGATIVE)
def test_clear_negative_reviews(sentiment_model: Pipeline, text: str) -> None:
    assert sentiment_model.predict([text]).tolist() == [0]


@pytest.mark.parametrize("text", POSITIVE)
def test_clear_positive_reviews(sentiment_model: Pipeline, text: str) -> None:
    assert sentiment_model.predict([text]).tolist() == [1]


PRODUCTS = ["laptop", "phone", "headphones", "smartwatch", "tablet", "speaker", "mixer", "kettle"]
ASPECTS = ["battery", "display", "performance", "sound", "camera", "keyboard", "screen", "software", "speed"]
NAMES = ["Rahul", "Priya", "Imran", "Ayesha"]
INVARIANT = [  # (template, what it is filled with, the label it must keep whatever fills it)
    ("The {} arrived and it is excellent", PRODUCTS, 1),
    ("I returned the {}, it is useless", PRODUCTS, 0),
    ("Happy with the {}, it is superb", ASPECTS, 1),
    ("The {} is very poor, disappointed", ASPECTS, 0),
    ("Bought it for {}, totally worth it", NAMES, 1),
    ("{} says it is not worth the money", NAMES, 0),
]


@pytest.mark.parametrize("template, fillers, label", INVARIANT, ids=[t for t, _, _ in INVARIANT])
def test_products_aspects_and_names_do_not_change_the_label(sentiment_model: Pipeline, template: str,
                                                            fillers: list[str], label: int) -> None:
    vocabulary = sentiment_model.named_steps["tfidf"].vocabulary_
    known = [word for word in fillers if clean_text(word) in vocabulary]
    assert len(known) >= len(fillers) - 1, f"the model must know the words swapped in, knows only {known}"
    assert sentiment_model.predict([template.format(word) for word in known]).tolist() == [label] * len(known)


REVIEWS = ["Totally worth it, superb display", "Terrible build quality, returned it", "Not worth the money",
          "Loved the camera", "good but battery is below average"]


def test_a_reviewers_signature_does_not_change_the_label(sentiment_model: Pipeline) -> None:
    base = sentiment_model.predict(REVIEWS).tolist()
    for name in ["Rahul Sharma", "Priya", "Flipkart Customer", "Ayesha Siddiqui"]:
        for signed in ([f"{r} - {name}" for r in REVIEWS], [f"{name}: {r}" for r in REVIEWS]):
            assert sentiment_model.predict(signed).tolist() == base, name


def test_what_cleaning_strips_does_not_change_the_label(sentiment_model: Pipeline) -> None:
    """The raw-text pipeline end to end: markup, case, links, punctuation and digits are not signal."""
    base = sentiment_model.predict(REVIEWS).tolist()
    noisy = [f"<br>{r.upper()}!!! https://example.com/p/123 {i}" for i, r in enumerate(REVIEWS)]
    assert sentiment_model.predict(noisy).tolist() == base


BASES = ["Good laptop for daily use", "Nice phone, the display is superb", "Average tablet",
         "Decent speaker for the price"]


@pytest.mark.parametrize("clause, direction", [
    ("but the battery stopped working in a week", -1),
    ("and the sound is very poor", -1),
    ("loved the keyboard", +1),
])
def test_a_clear_clause_moves_the_score_its_way(sentiment_model: Pipeline, clause: str, direction: int) -> None:
    before = positive_scores(sentiment_model, BASES)
    after = positive_scores(sentiment_model, [f"{base}, {clause}" for base in BASES])
    assert (np.sign(after - before) == direction).all(), (before, after)
