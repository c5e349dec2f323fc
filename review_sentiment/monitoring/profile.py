"""The reference profile: what monitoring compares a served version's traffic against.

Computed at training time from the version's own reviews and logged with its run as a small JSON
artifact. Each distribution keeps at most `SAMPLE_VALUES` values (a seeded sample): enough for a
two-sample test, small enough to log in milliseconds. The same `text_stats` measures the reviews
the service logged later, so both sides are measured the same way.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

from review_sentiment.modeling.linear import predict_with_scores
from text_cleaning import clean_texts

PROFILE_ARTIFACT = "reference_profile.json"
PROFILE_SCHEMA = 1
SAMPLE_VALUES = 5000


@dataclass(frozen=True)
class TextStats:
    """Per review: length in characters, share of its tokens outside the vocabulary (NaN when the
    cleaning left none), non-ASCII or not, empty after cleaning or not; and the out-of-vocabulary
    tokens, counted."""

    lengths: np.ndarray
    oov_shares: np.ndarray
    non_ascii: np.ndarray
    empty: np.ndarray
    unseen_terms: Counter

    @classmethod
    def of(cls, texts: Sequence[str], vocabulary: frozenset[str],
           clean: Callable[[list[str]], list[str]] = clean_texts) -> TextStats:
        unseen: Counter = Counter()
        shares = np.full(len(texts), np.nan)
        for i, tokens in enumerate(cleaned.split() for cleaned in clean(list(texts))):
            outside = [token for token in tokens if token not in vocabulary]
            unseen.update(outside)
            if tokens:
                shares[i] = len(outside) / len(tokens)
        return cls(lengths=np.fromiter(map(len, texts), float, len(texts)), oov_shares=shares,
                   non_ascii=np.fromiter((not text.isascii() for text in texts), bool, len(texts)),
                   empty=np.isnan(shares), unseen_terms=unseen)


def vocabulary(pipeline: Pipeline) -> frozenset[str]:
    """The single words the model knows (its bigrams are pairs of these)."""
    return frozenset(term for term in pipeline.named_steps["tfidf"].vocabulary_ if " " not in term)


def reference_profile(pipeline: Pipeline, traffic_texts: Sequence[str], train_labels: Sequence[int],
                      test_texts: Sequence[str], seed: int = 0,
                      clean: Callable[[list[str]], list[str]] = clean_texts) -> dict:
    """Lengths, non-ASCII and empty shares from every usable review of the training file, repeats
    included (training drops exact duplicates; traffic does not, and a one-liner like "Good" comes
    back often); out-of-vocabulary shares and the model's scores from its test reviews, which it never
    saw (what new in-distribution text looks like). `clean`: the pipeline's first step (our cleaning),
    or a look-up of what it gave for these texts (a tuning run cleans each review once)."""
    words = vocabulary(pipeline)
    traffic, test = TextStats.of(traffic_texts, words, clean), TextStats.of(test_texts, words, clean)
    labels, scores = predict_with_scores(pipeline[1:], clean(list(test_texts)))
    rng = np.random.default_rng(seed)

    def sample(values: np.ndarray) -> list[float]:
        values = values[~np.isnan(values)]
        picked = rng.choice(values, SAMPLE_VALUES, replace=False) if len(values) > SAMPLE_VALUES else values
        return [round(float(v), 4) for v in picked]

    return {
        "schema": PROFILE_SCHEMA,
        "traffic_reviews": len(traffic.lengths), "test_reviews": len(test.lengths),
        "lengths": sample(traffic.lengths),
        "non_ascii_share": float(traffic.non_ascii.mean()),
        "empty_share": float(traffic.empty.mean()),
        "positive_label_share": float(np.mean(train_labels)),
        "oov_shares": sample(test.oov_shares),
        "scores": sample(np.asarray(scores, float)),
        "positive_share": float(np.mean(labels)),
        "vocabulary": sorted(words),
    }
