"""Optuna search for one model family: seeded TPE over stratified k-fold macro-F1, with pruning."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
import optuna
from joblib import effective_n_jobs
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold, cross_val_score

from review_sentiment.modeling.families import FAMILIES, build_pipeline, left_no_words

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class EmptyVocabulary(ValueError):
    """A configuration whose TF-IDF keeps no term on some fold (say min_df 7 on a small set): that
    trial fails and the study goes on; the tuning run reports a family where every trial did."""


def tune_family(
    family: str,
    clean_train: Sequence[str],
    y_train: np.ndarray,
    *,
    trials: int,
    folds: int,
    seed: int,
    n_jobs: int,
    callbacks: Sequence[TrialCallback] = (),
) -> optuna.Study:
    """Maximise mean CV macro-F1 of `family` on already-cleaned training texts.

    Trials run one after another, so a seed fixes the whole search. Folds run `n_jobs` at a
    time; after each round the running mean is reported and clearly worse trials are pruned.
    """
    fold_rounds = _rounds(list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(clean_train, y_train)),
                          effective_n_jobs(n_jobs))

    @functools.cache
    def analysed(n_max: int) -> list[list[str]]:
        """Each text's word n-grams, made once per n-gram size by the TF-IDF's own analyser:
        trials then skip tokenising (a quarter of the TF-IDF time) and see exactly the same features."""
        analyse = TfidfVectorizer(ngram_range=(1, n_max)).build_analyzer()
        return [analyse(text) for text in clean_train]

    def objective(trial: optuna.Trial) -> float:
        params = FAMILIES[family].suggest(trial)
        pipeline = build_pipeline(family, params, seed, with_cleaning=False)
        pipeline.set_params(tfidf__analyzer=_already_analysed, tfidf__ngram_range=(1, 1))
        X = analysed(params["tfidf_ngram_max"])
        scores: list[float] = []
        for step, fold_round in enumerate(fold_rounds):
            try:
                scores += cross_val_score(pipeline, X, y_train, scoring="f1_macro", cv=fold_round, n_jobs=n_jobs,
                                          error_score="raise").tolist()
            except ValueError as err:
                if left_no_words(err):
                    trial.set_user_attr("failed", f"min_df {params['tfidf_min_df']}, max_df "
                                                  f"{params['tfidf_max_df']:.2f} left no word on a fold")
                    raise EmptyVocabulary(str(err)) from None
                raise
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                trial.set_user_attr("pruned_after_folds", len(scores))
                raise optuna.TrialPruned()
        trial.set_user_attr("cv_f1_std", float(np.std(scores)))
        return float(np.mean(scores))

    study = optuna.create_study(
        study_name=family,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5),
    )
    study.optimize(objective, n_trials=trials, callbacks=list(callbacks), catch=(EmptyVocabulary,))
    return study


def _already_analysed(ngrams: list[str]) -> list[str]:
    return ngrams


def _rounds(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
