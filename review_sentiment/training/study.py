"""Optuna search for one model family: seeded TPE over stratified k-fold macro-F1, with pruning, in a
storage that every worker of a tuning run shares (and a rerun resumes from)."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from joblib import effective_n_jobs
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold, cross_val_score

from review_sentiment.databases import is_postgres, sqlalchemy_url
from review_sentiment.modeling.families import FAMILIES, NGRAM_SIZES, build_pipeline, left_no_words

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
    storage = RDBStorage(sqlalchemy_url(url), engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                         grace_period=GRACE_SECONDS,
                         heartbeat_stale_trial_callback=RetryFailedTrialCallback(max_retry=RETRIES))
    if storage.engine.dialect.name == "sqlite":
        sqlalchemy.event.listen(storage.engine, "connect", _write_ahead)
        storage.engine.dispose()  # the connections made while creating the tables predate the listener
    return storage


def _write_ahead(connection: sqlite3.Connection, _record: object) -> None:
    """WAL without an fsync per commit (a trial makes ~25 of them): 92 → 40 ms of storage time per
    trial, measured. A killed process loses nothing committed; only a power cut can lose the last commits."""
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")


def sampler(seed: int, shared: bool) -> optuna.samplers.TPESampler:
    """Seeded TPE. When workers share a study, each treats the others' running trials as bad results
    so that two workers do not try the same region at once (`constant_liar`)."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=shared)


def pruner() -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(n_startup_trials=5)


def analysed(clean_train: Sequence[str]) -> dict[int, list[list[str]]]:
    """Each text's word n-grams per n-gram size, made by the TF-IDF's own analyser, once per run (before
    workers fork, so they share them): trials skip tokenising (a quarter of the TF-IDF time) and see
    exactly the same features. Made per family and per worker, this cost 6 to 12 analyses a run."""
    return {n_max: [analyse(text) for text in clean_train]
            for n_max in NGRAM_SIZES for analyse in [TfidfVectorizer(ngram_range=(1, n_max)).build_analyzer()]}


def objective(
    family: str, ngrams: dict[int, list[list[str]]], y_train: np.ndarray, *, folds: int, seed: int, n_jobs: int,
) -> Objective:
    """Mean CV macro-F1 of `family` on the n-grams of the cleaned training texts (see `analysed`).

    Folds run `n_jobs` at a time; after each round the running mean is reported and clearly worse
    trials are pruned.
    """
    folds_of = StratifiedKFold(folds, shuffle=True, random_state=seed).split(ngrams[min(NGRAM_SIZES)], y_train)
    fold_rounds = _rounds(list(folds_of), effective_n_jobs(n_jobs))

    def cv_f1(trial: optuna.Trial) -> float:
        params = FAMILIES[family].suggest(trial)
        pipeline = build_pipeline(family, params, seed, with_cleaning=False)
        pipeline.set_params(tfidf__analyzer=_already_analysed, tfidf__ngram_range=(1, 1))
        X = ngrams[params["tfidf_ngram_max"]]
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

    return cv_f1


def _already_analysed(ngrams: list[str]) -> list[str]:
    return ngrams


def _rounds(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
