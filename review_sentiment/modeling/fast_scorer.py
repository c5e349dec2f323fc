"""The logged pipeline's decision, computed per review without sklearn's per-call overhead.

Every family we train is linear in its TF-IDF features (see `linear.decision_weights`), so a
review's log-odds is a short sum over the terms it contains. sklearn spends almost all of a
one-review `predict_proba` (0.78 ms here) validating input and building sparse matrices; this
walks the fitted vectorizer's own analyzer, vocabulary and idf in plain Python (0.07 ms).
tests/model/test_fast_scorer.py holds it to the pipeline's own `predict` and `predict_proba`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from review_sentiment.modeling.calibration import Calibration
from review_sentiment.modeling.fold_counts import tokenises_by_default
from review_sentiment.modeling.linear import decision_weights
from text_cleaning import clean_texts


@dataclass(frozen=True)
class FastScorer:
    prepare: Callable[[list[str]], list[str]]  # the steps before TF-IDF (our text cleaning)
    analyze: Callable[[str], list[str]]
    vocabulary: dict[str, int]
    idf: list[float]
    weights: list[float]
    bias: float
    sublinear_tf: bool
    # idf × weight and idf²: a term a review holds once (most) adds these, the same floats as computed per term
    idf_weight: list[float] = field(init=False, repr=False)
    idf_square: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "idf_weight", [i * w for i, w in zip(self.idf, self.weights, strict=True)])
        object.__setattr__(self, "idf_square", [i * i for i in self.idf])

    @classmethod
    def of(cls, pipeline: Pipeline) -> FastScorer:
        """Raises ValueError for a pipeline that is not preparation → TF-IDF → linear 0/1 model."""
        tfidf, model = pipeline[-2], pipeline[-1]
        if not (isinstance(tfidf, TfidfVectorizer) and tfidf.norm == "l2" and tfidf.use_idf and not tfidf.binary):
            raise ValueError(f"expected an l2-normalised TF-IDF before the model, found {tfidf!r}")
        if list(model.classes_) != [0, 1]:
            raise ValueError(f"expected classes [0, 1], found {list(model.classes_)}")
        weights, bias = decision_weights(model)
        prepare = _preparation(pipeline[:-2])
        return cls(prepare, _analyzer(tfidf, prepare), tfidf.vocabulary_, tfidf.idf_.tolist(), weights.tolist(), bias,
                   tfidf.sublinear_tf)

    def decisions(self, texts: list[str]) -> np.ndarray:
        """features · weights + bias per text: > 0 means positive."""
        return np.array([self._decision(text) for text in self.prepare(texts)])

    def predict(self, texts: list[str], calibration: Calibration | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """0/1 labels as the model's `predict` gives them; the logistic of the decision (`predict_proba`
        for Logistic Regression and Naive Bayes, a squashed margin for the SVM); with a calibration, the
        calibrated P(positive). What `linear.predict_with_scores` gives."""
        decisions = self.decisions(texts)
        probabilities = None if calibration is None else calibration.probability(decisions)
        return (decisions > 0).astype(int), expit(decisions), probabilities

    def _decision(self, text: str) -> float:
        vocabulary, idf, weights = self.vocabulary, self.idf, self.weights
        counts: dict[int, int] = {}
        for term in self.analyze(text):
            i = vocabulary.get(term)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return self.bias
        dot = squares = 0.0
        idf_weight, idf_square = self.idf_weight, self.idf_square
        for i, count in counts.items():
            if count == 1:
                dot += idf_weight[i]
                squares += idf_square[i]
            else:
                value = (math.log(count) + 1 if self.sublinear_tf else count) * idf[i]
                dot += value * weights[i]
                squares += value * value
        return dot / math.sqrt(squares) + self.bias  # the l2-normalised row · weights


def _preparation(prepare: Pipeline) -> Callable[[list[str]], list[str]]:
    """Our cleaning called directly when that is all the preparation is (every logged model): sklearn's
    FunctionTransformer call costs more than cleaning one review (0.05 of 0.06 ms, measured)."""
    step = prepare[0] if len(prepare) == 1 else None
    if isinstance(step, FunctionTransformer) and step.func is clean_texts and not step.kw_args and not step.validate:
        return clean_texts
    return prepare.transform


def _analyzer(tfidf: TfidfVectorizer, prepare: Callable[[list[str]], list[str]]) -> Callable[[str], list[str]]:
    """The vectorizer's own analyzer, or, where it tokenises by default and reads our cleaning's output, the
    same terms in the same order from `str.split` (2.7× faster: sklearn lowercases, runs its token regex
    and builds n-grams per review). Cleaned text is stemmed a-z words one space apart (tests/model/
    test_fast_scorer.py holds that and this to sklearn's analyzer on any text), so the default token
    pattern `\\b\\w\\w+\\b` finds exactly its words of two letters or more."""
    if prepare is not clean_texts or not tokenises_by_default(tfidf):
        return tfidf.build_analyzer()
    return _split_ngrams(*tfidf.ngram_range)


def _split_ngrams(low: int, high: int) -> Callable[[str], list[str]]:
    """sklearn's `_word_ngrams` of a cleaned review's words: n-grams of `low` to `high` words, by size (a
    closure, and the models' usual n-grams one comprehension: this runs for every review served)."""
    def words(text: str) -> list[str]:
        return [word for word in text.split() if len(word) > 1]

    def words_and_pairs(text: str) -> list[str]:
        found = words(text)
        return found + [first + " " + second for first, second in zip(found, found[1:], strict=False)]

    def ngrams(text: str) -> list[str]:
        found = words(text)
        grams = list(found) if low == 1 else []
        for n in range(max(low, 2), high + 1):
            grams += [" ".join(found[i:i + n]) for i in range(len(found) - n + 1)]
        return grams

    return {(1, 1): words, (1, 2): words_and_pairs}.get((low, high), ngrams)
