"""The reference profile: what monitoring compares a served version's traffic against.

Computed at training time from the version's own reviews and logged with its run as a small JSON
artifact. Each distribution keeps at most `SAMPLE_VALUES` values (a seeded sample): enough for a
two-sample test, small enough to log in milliseconds. The same `text_stats` measures the reviews
the service logged later, so both sides are measured the same way.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.pipeline import Pipeline

from review_sentiment.modeling.linear import predict_with_scores
from review_sentiment.modeling.metrics import Labels
from text_cleaning import clean_texts

if TYPE_CHECKING:
    import pandas as pd

PROFILE_ARTIFACT = "reference_profile.json"
PROFILE_SCHEMA = 2  # 2: traffic-like rows as distinct texts with weights (1: one value per test review)
SAMPLE_VALUES = 5000
_WORD = re.compile(r"[a-z]+")


class UnusableProfile(ValueError):
    """A logged profile the drift tests cannot use; the message says why, in a few words."""


@dataclass(frozen=True)
class ReferenceProfile:
    """What a version's traffic is compared with. `lengths`, the shares and `traffic_reviews` describe
    every usable review of its file; `oov_shares`, `scores` and `predicted` one value per distinct text
    of its traffic-like rows, each standing for `weights` rows (None: schema 1, one row each). A text
    empty after cleaning has no out-of-vocabulary share (None)."""

    traffic_reviews: int
    test_reviews: int
    lengths: list[float | None]
    non_ascii_share: float
    empty_share: float
    positive_label_share: float | None
    weights: list[int] | None
    oov_shares: list[float | None]
    scores: list[float | None]
    predicted: list[int]
    positive_share: float
    vocabulary: list[str]
    schema: int = PROFILE_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: object) -> ReferenceProfile:
        """The profile a run logged, checked: UnusableProfile says what is wrong. Schema-1 profiles
        (one value per row, only the share of positive predictions) read as rows of weight one."""
        if not isinstance(raw, dict):
            raise UnusableProfile(f"malformed: a {type(raw).__name__}, not an object")
        schema = raw.get("schema", 1)
        if schema not in (1, PROFILE_SCHEMA):
            raise UnusableProfile(f"schema {schema}; this code reads 1 and {PROFILE_SCHEMA}")
        needed = ("lengths", "oov_shares", "scores", "vocabulary", "non_ascii_share", "empty_share", "traffic_reviews")
        if missing := [key for key in needed if key not in raw]:
            raise UnusableProfile(f"no {', '.join(missing)}")
        try:
            if empty := [key for key in ("lengths", "oov_shares", "scores")
                         if not any(v is not None and v == v for v in raw[key])]:
                raise UnusableProfile(f"no value in {', '.join(empty)}")
            test_reviews = int(raw.get("test_reviews", len(raw["scores"])))
            predicted = raw.get("predicted")
            if predicted is None:  # schema 1: the share of positive predictions stands for that many rows
                positives = round(raw["positive_share"] * test_reviews)
                predicted = [1] * positives + [0] * (test_reviews - positives)
            weights = raw.get("weights")
            if weights is not None and not len(weights) == len(raw["oov_shares"]) == len(raw["scores"]) == len(
                    predicted):
                raise UnusableProfile("its weights and values differ in length")
            return cls(traffic_reviews=int(raw["traffic_reviews"]), test_reviews=test_reviews,
                       lengths=list(raw["lengths"]), non_ascii_share=float(raw["non_ascii_share"]),
                       empty_share=float(raw["empty_share"]), positive_label_share=raw.get("positive_label_share"),
                       weights=None if weights is None else [int(w) for w in weights],
                       oov_shares=list(raw["oov_shares"]), scores=list(raw["scores"]),
                       predicted=[int(p) for p in predicted], positive_share=float(raw.get("positive_share", 0.0)),
                       vocabulary=list(raw["vocabulary"]), schema=PROFILE_SCHEMA if weights is not None else 1)
        except UnusableProfile:
            raise
        except (TypeError, KeyError, ValueError) as err:
            raise UnusableProfile(f"malformed: {err}") from None


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
    def of(cls, texts: Sequence[str] | pd.Series, vocabulary: frozenset[str],
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


def stored(values: Sequence[float | None]) -> np.ndarray:
    """A profile's values as numbers: None (a text empty after cleaning has no out-of-vocabulary share)
    is NaN."""
    return np.array([np.nan if v is None else v for v in values], float)


def as_written(texts: Sequence[str], terms: Sequence[str],
               clean: Callable[[list[str]], list[str]] = clean_texts) -> dict[str, str]:
    """Each cleaned term as users wrote it: the commonest word of the texts that cleans to it ("tasty"
    for "tast"); the term itself when no single word does (a bigram, a word glued to punctuation)."""
    words: Counter = Counter()
    for text in texts:
        words.update(_WORD.findall(text.lower()))
    wanted = set(terms)
    # a stem keeps its word's first letters, so only words sharing a term's first three are cleaned
    candidates = [w for w in words if w[:3] in {t[:3] for t in wanted}]
    forms: dict[str, Counter] = {}
    for word, cleaned in zip(candidates, clean(candidates), strict=True):
        if cleaned in wanted:
            forms.setdefault(cleaned, Counter())[word] = words[word]
    return {t: forms[t].most_common(1)[0][0] if t in forms else t for t in terms}


def vocabulary(pipeline: Pipeline) -> frozenset[str]:
    """The single words the model knows (its bigrams are pairs of these)."""
    return frozenset(term for term in pipeline.named_steps["tfidf"].vocabulary_ if " " not in term)


def reference_profile(pipeline: Pipeline, traffic_texts: Sequence[str] | pd.Series, train_labels: Labels,
                      held_texts: Sequence[str], seed: int = 0,
                      clean: Callable[[list[str]], list[str]] = clean_texts) -> ReferenceProfile:
    """Lengths, non-ASCII and empty shares from every usable review of the training file, repeats
    included (training drops exact duplicates; traffic does not, and a one-liner like "Good" comes
    back often). Out-of-vocabulary shares, scores and predicted labels of `held_texts`, rows that stand
    for the model's traffic (`data.reviews.traffic_like`): one value per distinct text with `weights`,
    its rows, so the drift tests can resample texts rather than rows (repeats move together).
    `clean`: the pipeline's first step (our cleaning), or a look-up of what it gave for these texts (a
    tuning run cleans each review once)."""
    words = vocabulary(pipeline)
    rng = np.random.default_rng(seed)
    traffic = TextStats.of(traffic_texts, words, clean)
    lengths = traffic.lengths if len(traffic.lengths) <= SAMPLE_VALUES else rng.choice(
        traffic.lengths, SAMPLE_VALUES, replace=False)
    # each distinct text in sorted order, with its rows: as np.unique of the texts as a fixed-width string
    # array gives them, which took 2.5 s and ~4 bytes x the longest text per row at a million reviews (and
    # dropped a text's trailing NULs, which are kept here)
    repeats = Counter(held_texts)
    distinct = np.array(sorted(repeats), dtype=object)
    rows = np.fromiter((repeats[text] for text in distinct), np.int64, len(distinct))
    if len(distinct) > SAMPLE_VALUES:  # a sample of texts, each with all its rows
        picked = np.sort(rng.choice(len(distinct), SAMPLE_VALUES, replace=False))
        distinct, rows = distinct[picked], rows[picked]
    held = TextStats.of(distinct.tolist(), words, clean)
    labels, scores, _ = predict_with_scores(pipeline[1:], clean(distinct.tolist()))

    def rounded(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else round(float(v), 4) for v in np.asarray(values, float)]

    return ReferenceProfile(
        traffic_reviews=len(traffic.lengths), test_reviews=int(rows.sum()), lengths=rounded(lengths),
        non_ascii_share=float(traffic.non_ascii.mean()), empty_share=float(traffic.empty.mean()),
        positive_label_share=float(np.mean(train_labels)), weights=rows.tolist(), oov_shares=rounded(held.oov_shares),
        scores=rounded(scores), predicted=np.asarray(labels, int).tolist(),
        positive_share=float(np.average(labels, weights=rows)), vocabulary=sorted(words))
