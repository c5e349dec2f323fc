"""Optuna search for one model family: seeded TPE over stratified k-fold macro-F1, with pruning, in a
storage that every worker of a tuning run shares (and a rerun resumes from)."""
from __future__ import annotations

import warnings
from collections.abc import Callable, Container, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from review_sentiment.databases import (
    JOURNAL_SUFFIX,
    is_journal,
    is_postgres,
    sqlalchemy_url,
    sqlite_file,
    write_ahead,
)
from review_sentiment.modeling.families import FAMILIES, Params
from review_sentiment.modeling.fold_counts import CountedFolds, left_no_words, tfidf_features
from review_sentiment.modeling.linear import decision_values
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.processes import forked_pool, kept
from review_sentiment.training.journal import FileJournal, HeartbeatJournal

Objective = Callable[[optuna.Trial], float]
Storage = RDBStorage | HeartbeatJournal  # where a run's studies live; both keep heartbeats
HEARTBEAT_SECONDS = 2  # a running trial says it is alive this often ...
GRACE_SECONDS = 10  # ... and is marked failed (and queued again) when silent this long: its worker is gone
RETRIES = 3  # how often one configuration is queued again after its worker died


class EmptyVocabulary(ValueError):
    """A configuration whose TF-IDF keeps no term on some fold (say min_df 7 on a small set): that
    trial fails and the study goes on; the tuning run reports a family where every trial did."""


def default_storage(tracking_uri: str) -> str:
    """A journal file next to an SQLite tracking store (else in the working folder): studies persist on a
    laptop too, so a killed run resumes. A folder with the SQLite file of an earlier release (and no
    journal) keeps it, so that a run killed before the upgrade resumes too."""
    folder = store.parent if (store := sqlite_file(tracking_uri)) is not None else Path()
    journal, earlier = folder.resolve() / f"optuna{JOURNAL_SUFFIX}", folder.resolve() / "optuna.db"
    return f"sqlite:///{earlier}" if earlier.exists() and not journal.exists() else str(journal)


def open_storage(url: str) -> Storage:
    """Optuna's storage with heartbeats: a trial whose worker died (kill -9, lost machine) is marked
    failed by the next worker that looks, and its configuration is queued again. A path ending in
    .journal is a journal file (`journal.FileJournal`: one machine's workers); a PostgreSQL URL, a journal
    in that database (`postgres_journal.PostgresJournal`: workers anywhere), unless it holds Optuna's tables of an
    earlier release; any other URL, Optuna's RDBStorage."""
    with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8; the callback is
        # deprecated for RetryHeartbeatStaleTrialCallback (Optuna 4.9), which is experimental itself
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryFailedTrialCallback(max_retry=RETRIES)
        if is_journal(url):
            return HeartbeatJournal(FileJournal(Path(url)), HEARTBEAT_SECONDS, GRACE_SECONDS, retry)
        if is_postgres(url):
            from review_sentiment.training.postgres_journal import PostgresJournal  # psycopg: ~70 ms, only here
            if (journal := PostgresJournal.open(url)) is not None:
                return HeartbeatJournal(journal, HEARTBEAT_SECONDS, GRACE_SECONDS, retry)
        engine = {"pool_pre_ping": True} if is_postgres(url) else {"connect_args": {"timeout": 60}}
        storage = RDBStorage(sqlalchemy_url(url), engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                             grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=retry)
    if storage.engine.dialect.name == "sqlite":  # a trial commits ~25 times: 92 → 40 ms of storage per trial
        sqlalchemy.event.listen(storage.engine, "connect", write_ahead)
        storage.engine.dispose()  # the connections made while creating the tables predate the listener
    return storage


@contextmanager
def closed_after(storage: Storage) -> Iterator[Storage]:
    """The storage; an SQLite file's connections are closed as the block ends (the command ends without
    tearing down its objects), so its last commits go from its WAL back into the file, then whole and
    alone. (A journal has nothing to close: each append is written through, or committed, at once.)"""
    try:
        yield storage
    finally:
        disconnected(storage)


def disconnected(storage: Storage) -> None:
    """An SQL storage's pooled connections closed (it reconnects when next used): also before a failed run
    deletes its studies, since a read that Ctrl-C cut short would make those writes fail at once, as on
    the MLflow store (`databases.store_reconnected`)."""
    if isinstance(storage, RDBStorage):
        storage.engine.dispose()


def sampler(seed: int, shared: bool) -> optuna.samplers.TPESampler:
    """Seeded TPE. When workers share a study, each treats the others' running trials as bad results
    so that two workers do not try the same region at once (`constant_liar`)."""
    return optuna.samplers.TPESampler(seed=seed, constant_liar=shared)


def pruner() -> optuna.pruners.MedianPruner:
    return MedianAtClaim(n_startup_trials=5)


class MedianAtClaim(optuna.pruners.MedianPruner):
    """Optuna's MedianPruner over the trials complete when the trial was claimed (the claim's read of the
    study), rather than read from the storage again after every fold (~4 ms each on SQLite, ~14 ms a
    trial). The same decisions with one worker; with several, a trial another worker completes meanwhile
    counts from this worker's next trial on."""

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        return super().prune(cast(optuna.Study, _AtClaim(study)), trial)


class _AtClaim:
    """What `PercentilePruner.prune` reads of a study (pinned: tests/code/test_trial_queue.py), its trials from
    the claim's read of the study (Optuna's own per-thread copy, which `trial_queue._claim` fills and `tell`
    clears)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self.direction = study.direction

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._study._get_trials(deepcopy, states, use_cache=True)


@dataclass(frozen=True)
class FoldScore:
    """What scoring one fold gives: its macro-F1, and the fold model's decisions on its validation texts
    (the refit's calibration needs exactly those of the best trial: `BestTrialDecisions`)."""

    f1: float
    decisions: np.ndarray


FoldScores = Callable[[str, Params, int, list[int]], list[FoldScore]]  # family, params, seed, folds → per fold


@dataclass
class BestTrialDecisions:
    """The out-of-fold decisions of the best trial this process finished for a family. The calibration of
    the refit model is fitted on the decisions of that configuration's models on these same folds: taken
    from here, those models are not fitted a second time (at a million reviews, one trial's worth)."""

    trial: int = -1
    value: float = -np.inf
    by_fold: list[np.ndarray] = field(default_factory=list)

    def offer(self, trial: int, value: float, by_fold: list[np.ndarray]) -> None:
        if value > self.value:
            self.trial, self.value, self.by_fold = trial, value, by_fold

    def of(self, trial: int, folds: CountedFolds) -> np.ndarray | None:
        """Each training review's decision by its fold's model in `trial`; None unless this process ran it."""
        if trial != self.trial:
            return None
        out = np.empty(sum(len(held) for held in folds.held))
        for held, decisions in zip(folds.held, self.by_fold, strict=True):
            out[held] = decisions
        return out


class FoldProcessDied(RuntimeError):
    """A process scoring folds died mid-trial (killed; out of memory at scale): that trial fails, new
    processes take over, and the study goes on."""


TRIAL_FAILURES = (EmptyVocabulary, FoldProcessDied)  # fail their trial; the study goes on


@contextmanager
def fold_scorer(folds: CountedFolds, processes: int) -> Iterator[FoldScores]:
    """Scores a trial's folds `processes` at a time. The processes are forked once, after counting,
    so they share the counts (copy-on-write): a trial sends them its parameters and gets F1s back.
    (joblib shipped each trial its data again: slower than one process on 2 cores, measured.)"""
    if processes <= 1:
        yield lambda family, params, seed, numbers: [_fold_score(folds, family, params, seed, i) for i in numbers]
        return

    pool = forked_pool(processes, folds)

    def scores(family: str, params: Params, seed: int, numbers: list[int]) -> list[FoldScore]:
        nonlocal pool
        try:
            return list(pool.map(_kept_fold_score, *zip(*[(family, params, seed, i) for i in numbers], strict=True)))
        except BrokenProcessPool:
            pool.shutdown(wait=False, cancel_futures=True)
            pool = forked_pool(processes, folds)
            raise FoldProcessDied("a process scoring its folds died (killed, or out of memory)") from None

    try:
        yield scores
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # a fold still running is not waited for
        raise
    pool.shutdown()  # idle: its processes end at once, not after the command (which ends without teardown)


def objective(family: str, folds: CountedFolds, scores_of: FoldScores, *, seed: int, processes: int,
              best: BestTrialDecisions | None = None) -> Objective:
    """Mean CV macro-F1 of `family`: for each fold, the trial's TF-IDF derived from the fold's counts
    (exactly what a `TfidfVectorizer` fitted on the fold gives), the classifier fitted on it.

    Folds are scored `processes` at a time; the running mean is reported after each fold, in fold
    order, and clearly worse trials are pruned: the same reports and decisions whatever `processes`.
    A finished trial offers its folds' decisions to `best`.
    """
    fold_rounds = _rounds(list(range(len(folds.labels))), processes)

    def cv_f1(trial: optuna.Trial) -> float:
        params = FAMILIES[family].suggest(trial)
        scores: list[float] = []
        decisions: list[np.ndarray] = []
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
                scores.append(score.f1)
                decisions.append(score.decisions)
                trial.report(float(np.mean(scores)), len(scores) - 1)
                if trial.should_prune():
                    trial.set_user_attr("pruned_after_folds", len(scores))
                    raise optuna.TrialPruned()
        trial.set_user_attr("cv_f1_std", float(np.std(scores)))
        if best is not None:
            best.offer(trial.number, float(np.mean(scores)), decisions)
        return float(np.mean(scores))

    return cv_f1


def _fold_score(folds: CountedFolds, family: str, params: Params, seed: int, fold: int) -> FoldScore:
    """What `cross_val_score(build_pipeline(...), scoring="f1_macro")` scores on this fold, and the
    fold model's decisions (`linear.decision_values`) there."""
    X_train, X_valid = tfidf_features(folds.counts[params["tfidf_ngram_max"]][fold], params)
    y_train, y_valid = folds.labels[fold]
    model = FAMILIES[family].make(params, seed).fit(X_train, y_train)
    return FoldScore(float(macro_f1(y_valid, model.predict(X_valid))), decision_values(model, X_valid))


def _kept_fold_score(family: str, params: Params, seed: int, fold: int) -> FoldScore:
    return _fold_score(kept(), family, params, seed, fold)


def _rounds(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]
