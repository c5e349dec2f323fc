"""Optuna search for one model family: seeded TPE over stratified k-fold macro-F1, with pruning, in a
storage that every worker of a tuning run shares (and a rerun resumes from)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from joblib import Parallel, delayed, effective_n_jobs
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from sklearn.model_selection import StratifiedKFold

from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.databases import is_postgres, sqlalchemy_url, sqlite_without_fsync_per_commit
from review_sentiment.modeling.families import FAMILIES, NGRAM_SIZES, Params, left_no_words
from review_sentiment.modeling.fold_counts import FoldCounts, count_fold, tfidf_features
from review_sentiment.modeling.metrics import macro_f1

Objective = Callable[[optuna.Trial], float]
HEARTBEAT_SECONDS = 2  # a running trial says it is alive this often ...
GRACE_SECONDS = 10  # ... and is marked failed (and queued again) when silent this long: its worker is gone
RETRIES = 3  # how often one configuration is queued again after its worker died


class EmptyVocabulary(ValueError):
    """A configuration whose TF-IDF keeps no term on some fold (say min_df 7 on a small set): that
    trial fails and the study goes on; the tuning run reports a family where every trial did."""


def default_storage(tracking_uri: str) -> str:
    """An SQLite file next to an SQLite tracking store (else in the working folder): studies persist
    on a laptop too, so a killed run resumes."""
    folder = Path(tracking_uri.removeprefix("sqlite:///")).parent if tracking_uri.startswith("sqlite:///") else Path()
    return f"sqlite:///{folder.resolve() / 'optuna.db'}"


def open_storage(url: str) -> RDBStorage:
    """Optuna's relational storage with heartbeats: a trial whose worker died (kill -9, lost machine)
    is marked failed by the next worker that looks, and its configuration is queued again."""
    engine = {"pool_pre_ping": True} if is_postgres(url) else {"connect_args": {"timeout": 60}}
    sqlite_without_fsync_per_commit()
    storage = RDBStorage(sqlalchemy_url(url), engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                         grace_period=GRACE_SECONDS,
                         heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=RETRIES))
    return storage


def sampler(seed: int, shared: bool) -> optuna.samplers.TPESampler:
    """Seeded TPE. When workers share a study, each treats the others' running trials as bad results
    so that two workers do not try the same region at once (`constant_liar`)."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=shared)


def pruner() -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(n_startup_trials=5)


@dataclass(frozen=True)
class CountedFolds:
    """The CV folds of the training set and each fold's n-gram counts per n-gram size: made once per
    run, before workers fork (so they share them), and every trial of every family derives its
    TF-IDF from them. Counting per trial was three quarters of a trial's TF-IDF time."""

    labels: list[tuple[np.ndarray, np.ndarray]]  # per fold, the training and validation labels
    counts: dict[int, list[FoldCounts]]


def counted(clean_train: Sequence[str], y_train: np.ndarray, *, folds: int, seed: int) -> CountedFolds:
    """Raises ReviewDataError when a fold's training texts hold no word at all (a tiny data set)."""
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y_train)), y_train))
    texts = np.asarray(clean_train, dtype=object)
    try:
        counts = {n_max: [count_fold(texts[train], texts[valid], n_max) for train, valid in splits]
                  for n_max in NGRAM_SIZES}
    except ValueError as err:
        if left_no_words(err):
            raise ReviewDataError(f"a {folds}-fold split leaves a fold whose training reviews have no word after "
                                  f"cleaning: too few reviews with words for {folds} folds") from None
        raise
    return CountedFolds([(y_train[train], y_train[valid]) for train, valid in splits], counts)


def objective(family: str, folds: CountedFolds, *, seed: int, n_jobs: int) -> Objective:
    """Mean CV macro-F1 of `family`: for each fold, the trial's TF-IDF derived from the fold's counts
    (exactly what a `TfidfVectorizer` fitted on the fold gives), the classifier fitted on it.

    Folds run `n_jobs` at a time; after each round the running mean is reported and clearly worse
    trials are pruned.
    """
    fold_rounds = _rounds(list(range(len(folds.labels))), effective_n_jobs(n_jobs))

    def cv_f1(trial: optuna.Trial) -> float:
        params = FAMILIES[family].suggest(trial)
        counts = folds.counts[params["tfidf_ngram_max"]]
        scores: list[float] = []
        for step, fold_round in enumerate(fold_rounds):
            try:
                scores += Parallel(n_jobs=min(n_jobs, len(fold_round)))(
                    delayed(_fold_f1)(family, params, seed, counts[i], *folds.labels[i]) for i in fold_round)
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

    return cv_f1


def _fold_f1(family: str, params: Params, seed: int, counts: FoldCounts, y_train: np.ndarray,
             y_valid: np.ndarray) -> float:
    """What `cross_val_score(build_pipeline(...), scoring="f1_macro")` scores on this fold."""
    X_train, X_valid = tfidf_features(counts, params)
    model = FAMILIES[family].make(params, seed).fit(X_train, y_train)
    return float(macro_f1(y_valid, model.predict(X_valid)))


def _rounds(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
