"""The three model families, their Optuna search spaces and the sklearn pipelines they build.

Search spaces contain the published ones and widen them where the published ranges were
narrower than the data needs (min_df down to 1, unigrams or bigrams, sublinear TF, LR solver,
NB class prior). The TF-IDF never gets sklearn's stop_words="english": that list deletes the
negations (not, no, nor) that the cleaning keeps on purpose.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from sklearn.base import BaseEstimator
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.modeling.fold_counts import NGRAM_SIZES
from text_cleaning import clean_texts

Params = dict[str, Any]
MAX_DF_CEILING = 0.9  # the highest max_df any configuration uses: the most words a TF-IDF here keeps


@dataclass(frozen=True)
class ModelFamily:
    """A classifier family: how Optuna samples its knobs and how they become an estimator."""

    name: str
    suggest: Callable[[optuna.Trial], Params]
    make: Callable[[Params, int], BaseEstimator]


def _suggest_tfidf(trial: optuna.Trial) -> Params:
    return {
        "tfidf_max_features": trial.suggest_int("tfidf_max_features", 2000, 10000, step=500),
        "tfidf_min_df": trial.suggest_int("tfidf_min_df", 1, 7),
        "tfidf_max_df": trial.suggest_float("tfidf_max_df", 0.7, MAX_DF_CEILING),
        "tfidf_ngram_max": trial.suggest_int("tfidf_ngram_max", min(NGRAM_SIZES), max(NGRAM_SIZES)),
        "tfidf_sublinear_tf": trial.suggest_categorical("tfidf_sublinear_tf", [False, True]),
    }


def _logistic_space(trial: optuna.Trial) -> Params:
    return _suggest_tfidf(trial) | {
        "model_C": trial.suggest_float("model_C", 0.01, 2.0, log=True),
        "model_solver": trial.suggest_categorical("model_solver", ["liblinear", "lbfgs"]),
    }


def _naive_bayes_space(trial: optuna.Trial) -> Params:
    return _suggest_tfidf(trial) | {
        "model_alpha": trial.suggest_float("model_alpha", 0.01, 1.0, log=True),
        "model_fit_prior": trial.suggest_categorical("model_fit_prior", [True, False]),
    }


def _svm_space(trial: optuna.Trial) -> Params:
    return _suggest_tfidf(trial) | {"model_C": trial.suggest_float("model_C", 0.01, 2.0, log=True)}


FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        ModelFamily(
            "LogisticRegression",
            _logistic_space,
            lambda p, seed: LogisticRegression(
                C=p["model_C"], solver=p["model_solver"], class_weight="balanced",
                max_iter=1000, random_state=seed,
            ),
        ),
        ModelFamily(
            "NaiveBayes",
            _naive_bayes_space,
            lambda p, seed: MultinomialNB(alpha=p["model_alpha"], fit_prior=p["model_fit_prior"]),
        ),
        ModelFamily(
            "LinearSVM",
            _svm_space,
            lambda p, seed: LinearSVC(C=p["model_C"], class_weight="balanced", random_state=seed),
        ),
    )
}


def require_words(texts: Sequence[str], source: str) -> None:
    """Refuse, before anything is written, training texts from which no configuration here can learn a
    single term: the most permissive TF-IDF (min_df 1, max_df at its ceiling) finds none."""
    if not any(texts):
        raise ReviewDataError(f"{source}: no training review has a word left after cleaning (emoji, digits, "
                              f"punctuation and stopwords are removed); there is nothing to learn from")
    try:  # a single word in at most MAX_DF_CEILING of them is a term of the (1, 2) TF-IDF too: enough, and
        TfidfVectorizer(max_df=MAX_DF_CEILING).fit(texts)  # counting single words is 2-3 times faster
        return
    except ValueError:
        pass
    try:
        TfidfVectorizer(max_df=MAX_DF_CEILING, ngram_range=(1, 2)).fit(texts)
    except ValueError:
        raise ReviewDataError(f"{source}: every word left after cleaning is in more than {MAX_DF_CEILING:.0%} of "
                              f"the training reviews; nothing tells them apart") from None


def build_pipeline(family: str, params: Params, seed: int) -> Pipeline:
    """Cleaning → TF-IDF → classifier on raw review text: what gets fitted and logged. (Tuning derives
    the same TF-IDF per fold from counts it makes once: `fold_counts`.)"""
    tfidf = TfidfVectorizer(
        max_features=params["tfidf_max_features"],
        min_df=params["tfidf_min_df"],
        max_df=params["tfidf_max_df"],
        ngram_range=(1, params["tfidf_ngram_max"]),
        sublinear_tf=params["tfidf_sublinear_tf"],
    )
    return Pipeline([("clean", FunctionTransformer(clean_texts)), ("tfidf", tfidf),
                     ("model", FAMILIES[family].make(params, seed))])
