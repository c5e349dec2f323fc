"""The service's scorer and explanations must be the model's own decision, only faster."""
from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

from review_sentiment.data.reviews import load_texts
from review_sentiment.modeling.fast_scorer import FastScorer
from review_sentiment.modeling.linear import positive_scores, strongest_terms, term_weights
from tests.helpers import SAMPLE

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
