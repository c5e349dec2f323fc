"""The service's scorer and explanations must be the model's own decision, only faster."""
from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline

from review_sentiment.data.reviews import load_texts
from review_sentiment.modeling.families import build_pipeline
from review_sentiment.modeling.fast_scorer import FastScorer
from review_sentiment.modeling.linear import positive_scores, strongest_terms, term_weights
from tests.helpers import SAMPLE, STRONG
from text_cleaning import clean_texts

EDGE_CASES = ["", "!!!", "the and of", "😡", "zzzz qqqq"]  # nothing known: the decision is the bias alone
REVIEWS = ["Totally worth it, superb display", "Terrible build quality, returned it", "Not worth the money",
           "Loved the camera", "good but battery is below average"]


def test_fast_scorer_gives_the_pipelines_own_labels_and_scores(every_model: dict[str, Pipeline]) -> None:
    texts = load_texts(SAMPLE, "Review text").dropna().tolist() + EDGE_CASES
    for name, pipeline in every_model.items():
        labels, scores, _ = FastScorer.of(pipeline).predict(texts)
        assert labels.tolist() == pipeline.predict(texts).tolist(), name
        np.testing.assert_allclose(scores, positive_scores(pipeline, texts), rtol=0, atol=1e-9, err_msg=name)


def test_explanations_add_up_to_the_decision(sentiment_model: Pipeline) -> None:
    """Term pushes are features × weights: with every term listed they sum to decision − bias."""
    features = sentiment_model[:-1].transform(REVIEWS)
    terms, weights = term_weights(sentiment_model)
    pushes = strongest_terms(features, terms, weights, n=10_000)
    scorer = FastScorer.of(sentiment_model)
    np.testing.assert_allclose([sum(w for _, w in row) for row in pushes],
                               scorer.decisions(REVIEWS) - scorer.bias, atol=1e-3)


# Reviews as they come: letters of any script, digits, punctuation, emoji, URLs, tags, and every kind of space
# (how cleaning treats Unicode whitespace matters most to the split analyzer)
RAW_TEXT = st.lists(st.one_of(st.characters(), st.sampled_from(list("aeiou sntl\t\n\xa0\u2009\u3000\x1c\x85<>/:.")),
                              st.sampled_from(["http://x.io/a", "www", "<b>", "😍", "1️⃣", "not", "the", "is"])),
                    max_size=40).map("".join)
CLEANED = re.compile(r"([a-z]+( [a-z]+)*)?")  # what the split analyzer relies on


@functools.cache
def scorer_of(ngram_max: int) -> tuple[FastScorer, TfidfVectorizer]:
    texts = load_texts(SAMPLE, "Review text").dropna().tolist()[:300]
    pipeline = build_pipeline("LogisticRegression", STRONG | {"tfidf_ngram_max": ngram_max, "tfidf_min_df": 1}, 0)
    pipeline.fit(texts, [i % 2 for i in range(len(texts))])
    return FastScorer.of(pipeline), pipeline[-2]


@pytest.mark.parametrize("ngram_max", [1, 2, 3, 4])
@settings(max_examples=100, deadline=None)
@given(texts=st.lists(RAW_TEXT, min_size=1, max_size=5))
def test_on_cleaned_text_the_split_analyzer_gives_the_vectorizers_own_terms(ngram_max: int, texts: list[str]) -> None:
    scorer, tfidf = scorer_of(ngram_max)
    assert scorer.analyze.__module__ == FastScorer.__module__  # the split analyzer, not sklearn's
    for cleaned in clean_texts(texts):
        assert CLEANED.fullmatch(cleaned), cleaned
        assert scorer.analyze(cleaned) == tfidf.build_analyzer()(cleaned)
