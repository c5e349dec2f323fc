"""Optuna search for one model family: seeded TPE over stratified k-fold macro-F1, with pruning, in a
storage that every worker of a tuning run shares (and a rerun resumes from)."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from sklearn.model_selection import StratifiedKFold

from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.databases import is_postgres, sqlalchemy_url, write_ahead
from review_sentiment.modeling.families import FAMILIES, NGRAM_SIZES, Params, left_no_words
from review_sentiment.modeling.fold_counts import FoldCounts, count_fold_sizes, tfidf_features
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
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8; the callback is
        # deprecated for RetryHeartbeatStaleTrialCallback (Optuna 4.9), which is experimental itself
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(sqlalchemy_url(url), engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                             grace_period=GRACE_SECONDS,
                             heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=RETRIES))
    if storage.engine.dialect.name == "sqlite":  # a trial commits ~25 times: 92 → 40 ms of storage per trial
        sqlalchemy.event.listen(storage.engine, "connect", write_ahead)
        storage.engine.dispose()  # the connections made while creating the tables predate the listener
    return storage


def sampler(seed: int, shared: bool) -> optuna.samplers.TPESampler:
    """Seeded TPE. When workers share a study, each treats the others' running trials as bad results
    so that two workers do not try the same region at once (`constant_liar`)."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=shared)


def pruner() -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(n_startup_trials=5)


@dataclass(frozen=True)
class CountedFolds:
    """The CV folds of the training set and each fold's n-gram counts per n-gram size (one count of the
    longest range per fold): made once per run, before workers fork (so they share them), and every
    trial of every family derives its TF-IDF from them. Counting per trial was three quarters of a
    trial's TF-IDF time."""

    labels: list[tuple[np.ndarray, np.ndarray]]  # per fold, the training and validation labels
    counts: dict[int, list[FoldCounts]]


def counted(clean_train: Sequence[str], y_train: np.ndarray, *, folds: int, seed: int) -> CountedFolds:
    """Raises ReviewDataError when a fold's training texts hold no word at all (a tiny data set)."""
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(np.zeros(len(y_train)), y_train))
    texts = np.asarray(clean_train, dtype=object)
    try:
        by_fold = [count_fold_sizes(texts[train], texts[valid], NGRAM_SIZES) for train, valid in splits]
    except ValueError as err:
        if left_no_words(err):
            raise ReviewDataError(f"a {folds}-fold split leaves a fold whose training reviews have no word after "
                                  f"cleaning: too few reviews with words for {folds} folds") from None
        raise
    return CountedFolds([(y_train[train], y_train[valid]) for train, valid in splits],
                        {n_max: [fold[n_max] for fold in by_fold] for n_max in NGRAM_SIZES})


FoldScores = Callable[[str, Params, int, list[int]], list[float]]  # family, params, seed, folds → F1 per fold


class FoldProcessDied(RuntimeError):
    """A process scoring folds died mid-trial (killed; out of memory at scale): that trial fails, new
    processes take over, and the study goes on."""


TRIAL_FAILURES = (EmptyVocabulary, FoldProcessDied)  # fail their trial; the study goes on


@contextmanager
def fold_scorer(folds: CountedFolds, processes: int) -> Iterator[FoldScores]:
    """Scores a trial's folds `processes` at a time. The processes are forked once, after counting,
    so they share the counts (copy-on-write): a trial sends them its parameters and gets F1s back.
    (joblib shipped each trial its data again: slower than one process on 2 cores, measured.) A
    process pool executor rather than `multiprocessing.Pool`: a killed Pool worker leaves its task
    waiting forever; the executor reports it (BrokenProcessPool)."""
    if processes <= 1:
        yield lambda family, params, seed, numbers: [_fold_f1(folds, family, params, seed, i) for i in numbers]
        return

    def started() -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(processes, multiprocessing.get_context("fork"), _keep_folds, (folds, os.getpid()))
        list(pool.map(_ready, range(processes)))
        return pool

    pool = started()

    def scores(family: str, params: Params, seed: int, numbers: list[int]) -> list[float]:
        nonlocal pool
        try:
            return list(pool.map(_kept_fold_f1, *zip(*[(family, params, seed, i) for i in numbers], strict=True)))
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            pool = started()
            raise FoldProcessDied("a process scoring its folds died (killed, or out of memory)") from None

    try:
        yield scores
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def objective(family: str, folds: CountedFolds, scores_of: FoldScores, *, seed: int, processes: int) -> Objective:
    """Mean CV macro-F1 of `family`: for each fold, the trial's TF-IDF derived from the fold's counts
    (exactly what a `TfidfVectorizer` fitted on the fold gives), the classifier fitted on it.

    Folds are scored `processes` at a time; the running mean is reported after each fold, in fold
    order, and clearly worse trials are pruned: the same reports and decisions whatever `processes`.
    """
    fold_rounds = _rounds(list(range(len(folds.labels))), processes)

    def cv_f1(trial: optuna.Trial) -> float:
        params = FAMILIES[family].suggest(trial)
        scores: list[float] = []
        for fold_round in fold_rounds:
            try:
                round_scores = scores_of(family, params, seed, fold_round)
            except FoldProcessDied as err:
                trial.set_user_attr("failed", str(err))
                raise
            except ValueError as err:
                if left_no_words(err):
                    trial.set_user_attr("failed", f"min_df {params['tfidf_min_df']}, max_df "
                                                  f"{params['tfidf_max_df']:.2f} left no word on a fold")
                    raise EmptyVocabulary(str(err)) from None
                raise
            for score in round_scores:
                scores.append(score)
                trial.report(float(np.mean(scores)), len(scores) - 1)
                if trial.should_prune():
                    trial.set_user_attr("pruned_after_folds", len(scores))
                    raise optuna.TrialPruned()
        trial.set_user_attr("cv_f1_std", float(np.std(scores)))
        return float(np.mean(scores))

    return cv_f1


def _fold_f1(folds: CountedFolds, family: str, params: Params, seed: int, fold: int) -> float:
    """What `cross_val_score(build_pipeline(...), scoring="f1_macro")` scores on this fold."""
    X_train, X_valid = tfidf_features(folds.counts[params["tfidf_ngram_max"]][fold], params)
    y_train, y_valid = folds.labels[fold]
    model = FAMILIES[family].make(params, seed).fit(X_train, y_train)
    return float(macro_f1(y_valid, model.predict(X_valid)))


_kept: list[CountedFolds] = []  # in a fold process: the counts it was forked with


def _keep_folds(folds: CountedFolds, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle: it ends the pool
    _kept.append(folds)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    """An executor's process outlives a parent killed with SIGKILL, waiting for work forever: leave
    once this process has been handed to another parent."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _ready(_: int) -> None:
    """Nothing: makes the executor fork its processes when it is created, not later inside a trial."""


def _kept_fold_f1(family: str, params: Params, seed: int, fold: int) -> float:
    return _fold_f1(_kept[0], family, params, seed, fold)


def _rounds(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
