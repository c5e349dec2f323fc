"""The tuning run end to end: load → clean → split → tune → evaluate → log → register → promote.

Each family gets one MLflow parent run holding its Optuna study (every trial a nested child run),
the refit best model, its metrics, reports and the model itself; the family with the best CV F1
becomes the candidate for `champion`. The studies live in an Optuna storage that `--workers` (and
`--join` elsewhere) share and that a rerun of a killed command resumes from.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import socket
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import numpy as np
import optuna
from mlflow.entities import Param
from mlflow.store.db.db_types import DATABASE_ENGINES
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

from review_sentiment.constants import BEST_PARAMS_ARTIFACT, CHAMPION
from review_sentiment.data.reviews import ReviewDataError, Reviews, Split, data_digest, split_reviews
from review_sentiment.databases import is_postgres, sqlite_without_fsync_per_commit, storage_file, without_password
from review_sentiment.modeling.families import require_words
from review_sentiment.modeling.fold_counts import (
    LARGE_FILE_REVIEWS,
    CountedFolds,
    CountingProcessDied,
    counted,
    cv_folds,
    fold_processes_by_default,
)
from review_sentiment.tracking.alias_lock import require_alias_lock
from review_sentiment.tracking.model_loading import load_pipeline
from review_sentiment.tracking.orphans import (
    process_tags,
)
from review_sentiment.tracking.promotion import Promotion, judge, promote_if_better, record, score
from review_sentiment.tracking.records import Decision, Lineage, Score, VersionRecord
from review_sentiment.tracking.registry import current_champion
from review_sentiment.tracking.trial_runs import log_missing_trial_runs
from review_sentiment.tracking.trial_writer import TrialWriter
from review_sentiment.tracking.undo import Writes
from review_sentiment.training.attempt import Attempt, RunConflict
from review_sentiment.training.family_studies import (
    VERSION,
    FamilyStudy,
    command_key,
    open_studies_to_join,
)
from review_sentiment.training.release import TrainingData, release_by
from review_sentiment.training.study import (
    GRACE_SECONDS,
    TRIAL_FAILURES,
    BestTrialDecisions,
    Storage,
    closed_after,
    default_storage,
    fold_scorer,
    objective,
    open_storage,
)
from review_sentiment.training.trial_queue import finished_by_workers, run_queued_trials, unfinished
from review_sentiment.training.workers import parent_alive
from text_cleaning import clean_texts

STUDIES_WAIT_SECONDS = 0.1  # how often a local worker looks whether the run has made its studies
NO_RUN_TO_JOIN = ("no unfinished tuning run with these data and flags in this storage: start it with the same flags "
                  "without --join (and the same --storage and MLFLOW_TRACKING_URI)")
# How often the run looks whether other workers' trials have finished (each look claims): after 10 ms, then
# twice as long each time, up to every 0.25 s. The trial awaited is a family's last elsewhere, which most
# often ends within one trial's time; a fixed 0.25 s kept the run from its refit ~0.2 s a family.
WAIT_SECONDS = (0.01, 0.25)

@dataclass(frozen=True)
class TuningSettings:
    """What the tuning CLI's flags choose."""

    data: Path
    text_col: str
    rating_col: str
    models: list[str]
    trials: int
    folds: int | None  # None: `fold_counts.cv_folds` of the file's usable reviews (`prepare` resolves it)
    test_size: float
    seed: int
    n_jobs: int  # processes scoring a trial's folds; 0: `fold_processes_by_default`
    experiment: str
    registered_model: str
    storage: str | None = None  # Optuna storage URL; None: an SQLite file next to the tracking store
    workers: int = 1
    join: bool = False
    worker_name: str | None = None
    allow_new_data: bool = False  # the tuned model may compete with a champion of another data file
    unlocked_promotion: bool = False  # move `champion` even where no lock serialises alias moves

    def fold_processes(self, usable_reviews: int) -> int:
        cores = len(os.sched_getaffinity(0))  # what this process may use (a container's share), not the host's
        wanted = {0: fold_processes_by_default(usable_reviews, cores, self.workers), -1: cores}.get(
            self.n_jobs, self.n_jobs)
        assert self.folds is not None, "run_tuning resolves the folds before any trial"
        return max(1, min(wanted, self.folds))

    def key(self, reviews_digest: str) -> str:
        """What decides the results: a rerun with the same key resumes, a worker with it joins."""
        return command_key(reviews=reviews_digest, text_col=self.text_col, rating_col=self.rating_col,
                           models=self.models, trials=self.trials, folds=self.folds, test_size=self.test_size,
                           seed=self.seed, experiment=self.experiment, registered_model=self.registered_model)


@dataclass(frozen=True)
class FamilyResult:
    """One family's line of the summary table, and the version that decides promotion."""

    family: str
    cv_f1: float
    train_f1: float
    test_f1: float
    fit_time: float
    version: str
    test_pred: np.ndarray | None = None  # on the held-out slice; None for a version registered before


@dataclass(frozen=True)
class Worker:
    """This process's part in the studies: its name on progress lines and child runs, and its sampler seed."""

    name: str
    seed: int
    shown: bool  # name it on progress lines: more than one worker shares the studies


@dataclass(frozen=True)
class Prepared:
    """The reviews, their split and the CV folds' counts: made once, before workers fork."""

    reviews: Reviews
    split: Split
    folds: CountedFolds  # the CV folds' n-gram counts every trial derives its TF-IDF from
    digest: str
    cleaned: dict[str, str]  # every distinct usable review, cleaned (`clean_texts`): cleaned once per run
    lineage: Lineage

    @functools.cached_property
    def training(self) -> TrainingData:
        """What every family's model is fitted and judged on; its training dataset is made once (its digest
        hashes every row and MLflow infers its schema from every row: seconds per million reviews)."""
        return TrainingData(self.reviews, self.split, self.lineage, self.digest, self.clean, folds=self.folds)

    def clean(self, texts: Iterable[str]) -> list[str]:
        """`clean_texts(texts)` for reviews of this run, without cleaning them again."""
        cleaned = self.cleaned
        return [cleaned[text] for text in texts]


def run_tuning(settings: TuningSettings, reviews: Reviews, writer: TrialWriter) -> None:
    """Tune on `reviews` (`load_reviews` of the settings' file and columns). Raises ReviewDataError for
    unusable data: before anything is written to MLflow where it can be told up front, else after taking
    back what this run wrote (no half-state either way). `writer` writes the trials' child runs
    (`trial_writer`), started before the pipeline's imports."""
    with sqlite_without_fsync_per_commit(mlflow.get_tracking_uri()):  # MLflow's store, if an SQLite file
        _run_tuning(settings, reviews, writer)


def _run_tuning(settings: TuningSettings, reviews: Reviews, writer: TrialWriter) -> None:
    started = time.perf_counter()
    prepared = prepare(settings, reviews)  # clean → split → count each CV fold once
    settings = dataclasses.replace(settings, folds=len(prepared.folds.labels))
    if settings.join:
        join_studies(settings, prepared, settings.worker_name or f"{socket.gethostname()}:{os.getpid()}", writer)
        return
    require_alias_lock(settings.unlocked_promotion)  # refused now, before hours of tuning, not after
    storage = _storage(settings, say=True)  # before the workers fork: two processes creating its tables collide
    print(f"MLflow: experiment {settings.experiment!r} at {without_password(mlflow.get_tracking_uri())}")
    writer.open_store(mlflow.get_tracking_uri(), len(prepared.reviews.label))  # a new SQLite store: made meanwhile
    pending: list[Callable[[], FamilyResult]] = []  # each family's result, once its model is published
    with closed_after(storage), Attempt(storage, settings.registered_model, settings.unlocked_promotion) as attempt:
        with _written_if_failed(writer), attempt.studies(
                settings.key(prepared.digest), settings.models, settings.trials, settings.seed, settings.experiment,
                functools.partial(_new_parent_run, prepared=prepared, settings=settings),
                functools.partial(join_studies, settings, prepared, writer=writer, wait=True),
                settings.workers) as studies:
            me = Worker("w0", settings.seed, shown=settings.workers > 1)
            # tune → evaluate → log, family by family; each model published beside the next family's trials

            def settle_published() -> None:
                """Record each version as soon as its answer is in: a rerun after a kill then resumes past it."""
                if not writer.publishing():
                    for settled in pending:
                        settled()

            for family_study in studies:
                pending.append(tune_and_register(family_study, prepared, settings, storage, me, attempt.writes,
                                                 writer, settle_published))
            results = [settled() for settled in pending]
            writer.flush()  # every child run sent so far is written (a local worker's last ones may come
            # after: it is joined once this block ends; the gaps' settle time keeps them from being written twice)
            _fill_gaps(studies)
        best = choose(results, prepared, settings)
        promotion = promote_if_better(settings.registered_model, mlflow.MlflowClient().get_model_version(
            settings.registered_model, best.version), prepared.training.protected,
            allow_new_data=settings.allow_new_data, unlocked=settings.unlocked_promotion)
    print_summary(results, settings.registered_model, best.family, promotion, time.perf_counter() - started)


def prepare(settings: TuningSettings, reviews: Reviews) -> Prepared:
    folds = settings.folds or cv_folds(len(reviews.label))
    split = split_reviews(reviews, settings.test_size, folds, settings.seed)
    print(f"Loaded {reviews.rows_read} rows from {reviews.path}: dropped {reviews.dropped_missing} "
          f"with no text or rating and {reviews.dropped_duplicates} duplicates; "
          f"{len(reviews.label)} reviews, {reviews.label.mean():.1%} positive")
    print(f"Split: {len(split.y_train)} train / {len(split.y_test)} test (held out by each review's hash, "
          f"seed {settings.seed})")
    if settings.folds is None and len(reviews.label) > LARGE_FILE_REVIEWS:
        print(f"CV: {folds} folds: more than {LARGE_FILE_REVIEWS:,} usable reviews (--folds 5 for five)")
    distinct = list(dict.fromkeys(reviews.usable_text))  # every training and test text is one of them
    cleaned = dict(zip(distinct, clean_texts(distinct), strict=True))
    del distinct
    clean_train = [cleaned[text] for text in split.X_train]
    require_words(clean_train, str(reviews.path))
    _quiet_optuna()
    # counted in as many processes as score the folds (one for a small file: milliseconds); where that is more
    # than one, with the refit's count in the slot they leave free (but by a worker that joins: it refits nothing)
    processes = dataclasses.replace(settings, folds=folds).fold_processes(len(reviews.label))
    held_out = [cleaned[text] for text in split.X_test] if processes > 1 and not settings.join else None
    try:
        folds_counted = counted(clean_train, split.y_train, folds=folds, seed=settings.seed, processes=processes,
                                held_out=held_out)
    except CountingProcessDied as died:  # one count at a time may fit in memory where two at once did not
        print(f"{died}: counting them here, one at a time", flush=True)
        folds_counted = counted(clean_train, split.y_train, folds=folds, seed=settings.seed)
    return Prepared(reviews, split, folds_counted, data_digest(reviews.frame), cleaned,
                    Lineage.of(reviews.path, settings.text_col, settings.rating_col, settings.test_size, settings.seed))


def join_studies(settings: TuningSettings, prepared: Prepared, name: str, writer: TrialWriter,
                 wait: bool = False) -> None:
    """Run trials of a tuning command started elsewhere until no trial is left to claim; register nothing.
    `wait`: a worker the command started itself waits for its studies to be made (or resumed)."""
    if not wait and (file := storage_file(_storage_url(settings))) is not None and not file.exists():
        raise RunConflict(NO_RUN_TO_JOIN)  # refused without making the file: nothing was started there
    with closed_after(_storage(settings, say=not wait)) as storage:
        _join(settings, prepared, name, writer, wait, storage)


def _join(settings: TuningSettings, prepared: Prepared, name: str, writer: TrialWriter, wait: bool,
          storage: Storage) -> None:
    me = Worker(name, (settings.seed + zlib.crc32(name.encode())) % 2**32, shown=True)  # numpy seeds are 32-bit
    key = settings.key(prepared.digest)
    if urlsplit(mlflow.get_tracking_uri()).scheme.split("+")[0] in DATABASE_ENGINES:
        # MLflow imports its SQL store at its first call (~0.7 s): a local worker does that while the run is
        # still making the studies, rather than after them, when it could run trials. (Its store itself is
        # opened later: the run may still be creating the tables.)
        importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
    while (studies := open_studies_to_join(storage, key, settings.models, me.seed)) is None and wait:
        if not parent_alive():
            return
        time.sleep(STUDIES_WAIT_SECONDS)
    if studies is None:
        raise RunConflict(NO_RUN_TO_JOIN)
    if not wait:  # a --join command names its store; a local worker shares the command's writer
        writer.open_store(mlflow.get_tracking_uri())
    print(f"{name} (pid {os.getpid()}) joined the studies of run {key}", flush=True)
    # a local worker whose command was killed claims no more: its trials would run for a run that is gone
    go_on = parent_alive if wait else lambda: True
    ran: dict[str, int] = {}
    for study in (s for s in studies if s.version is None):
        if not go_on():
            break
        ran[study.family] = _run_trials(study, prepared, settings, storage, me, writer, until_complete=False,
                                        go_on=go_on)
    why = "nothing left to claim" if go_on() else "the run that started it is gone: claimed no more"
    print(f"{name}: ran " + ", ".join(f"{n} {family}" for family, n in ran.items()) + f" trials; {why}", flush=True)


def tune_and_register(
    family_study: FamilyStudy, prepared: Prepared, settings: TuningSettings, storage: Storage, me: Worker,
    writes: Writes, writer: TrialWriter, after_trial: Callable[[], None] = lambda: None,
) -> Callable[[], FamilyResult]:
    """Run trials until the family's study is complete (the other workers' ones included), then, in its
    parent run: refit, evaluate, log; the publisher behind `writer` publishes the model (figures, model,
    version) while the command goes on (`after_trial` runs after each of this process's trials). Gives what returns the
    family's result once the version exists, and records it (`writes`, the study). The version is tagged
    with the digest of all the reviews, so a retrain on the same data finds it. A family registered
    before a restart is not redone."""
    family, study, run_id = family_study.family, family_study.study, family_study.parent_run_id
    if family_study.version is not None:
        print(f"\n{family}: study complete and registered as v{family_study.version} before the restart")
        registered = _registered_result(family, settings.registered_model, family_study.version, study.best_value)
        return lambda: registered
    resumed = f", resuming: {family_study.finished_before} finished before" if family_study.resumed else ""
    print(f"\n{family}: {settings.trials} trials, {settings.folds}-fold CV{resumed}")
    best = BestTrialDecisions()
    _run_trials(family_study, prepared, settings, storage, me, writer, until_complete=True, best=best,
                after_trial=after_trial)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise ReviewDataError(f"{prepared.reviews.path}: every {family} trial failed: no TF-IDF configuration "
                              f"tried kept a word on every CV fold (the reviews share too few words; add data)")

    chosen = study.best_trial  # read once: its parameters, value and number belong together, even in a tie
    assert chosen.value is not None  # a complete trial has its value
    cv_f1 = chosen.value
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({f"best_{k}": v for k, v in chosen.params.items()})
        mlflow.log_dict(chosen.params, BEST_PARAMS_ARTIFACT)
        releasing = release_by(writer.publish, settings.registered_model, family, chosen.params, settings.seed,
                               prepared.training, "tuning", cv_f1=cv_f1,
                               tuned_decisions=best.of(chosen.number, prepared.folds))
    print(f"  best CV F1 {cv_f1:.4f}: refitted; its model is published beside what follows", flush=True)

    @functools.cache  # recorded once
    def settled() -> FamilyResult:
        released = releasing()
        if not released.reused or released.record.run_id == run_id:  # reused: this run's own, before a kill
            writes.versions.append(released.version)
        version = str(released.version.version)
        study.set_user_attr(VERSION, version)
        same = f" (identical to v{version}, registered before: reused)" if released.reused else ""
        assert released.record.test_f1 is not None  # release records it on every version it makes
        print(f"{family}: best CV F1 {cv_f1:.4f}, test F1 {released.record.test_f1:.4f} "
              f"-> {settings.registered_model} v{version}{same}")
        return FamilyResult(family, cv_f1, released.train_f1, released.record.test_f1, released.fit_time,
                            version, released.test_pred)

    return settled


def choose(results: list[FamilyResult], prepared: Prepared, settings: TuningSettings) -> FamilyResult:
    """The run's candidate by the rule every promotion uses: each family against the best so far, on the
    held-out slice (a tie keeps the earlier). The families not chosen have that decision recorded."""
    name, protected = settings.registered_model, prepared.training.protected
    said = {r.version: r.test_pred if r.test_pred is not None else
            load_pipeline(mlflow.MlflowClient().get_model_version(name, r.version)).predict(protected.texts)
            for r in results}

    @functools.cache  # a family compared with the final best in the loop is not bootstrapped again below
    def versus(candidate: str, incumbent: str) -> Score:
        return score(protected, said[candidate], said[incumbent])

    best = results[0]
    for result in results[1:]:
        if judge(versus(result.version, best.version), None).wins:
            best = result
    champion = current_champion(name)
    for result in results:
        if result.version in (best.version, None if champion is None else str(champion.version)):
            continue
        compared = versus(result.version, best.version)
        record(name, result.version, Decision(
            False, f"v{result.version} not promoted: the tuning run chose {best.family} v{best.version}, "
                   f"{judge(compared, None).why}", best.version, compared))
    return best


def print_summary(results: list[FamilyResult], model_name: str, candidate: str,
                  promotion: Promotion, seconds: float) -> None:
    print("\n" + "=" * 78)
    for r in results:
        print(f"{r.family:<18} | CV F1={r.cv_f1:.4f} | Train F1={r.train_f1:.4f} | "
              f"Test F1={r.test_f1:.4f} | {model_name} v{r.version}")
    print("=" * 78)
    print(f"Candidate (best on the held-out slice, by the promotion rule): {candidate}. {promotion.reason}.")
    print(f"Champion: models:/{model_name}@{CHAMPION} = v{promotion.champion}  ({seconds:.1f}s total)")


def _storage_url(settings: TuningSettings) -> str:
    return settings.storage or default_storage(mlflow.get_tracking_uri())


def _storage(settings: TuningSettings, say: bool) -> Storage:
    url = _storage_url(settings)
    if say:
        print(f"Optuna: studies in {without_password(url)}")
    storage = open_storage(url)
    if say and is_postgres(url) and isinstance(storage, RDBStorage):
        print("  (in Optuna's relational tables there, as a release before the journal made them: ~90 ms a trial)")
    return storage


def _new_parent_run(experiment_id: str, family: str, study_name: str, prepared: Prepared,
                    settings: TuningSettings) -> str:
    """The family's parent run, made before any trial so that every worker can hang child runs on it."""
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=family, tags={
        "family": family, "data_path": str(prepared.reviews.path), "optuna_study": study_name, **process_tags()})
    params = {"family": family, "seed": settings.seed, "folds": settings.folds, "test_size": settings.test_size,
              "trials": settings.trials}
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def _run_trials(family_study: FamilyStudy, prepared: Prepared, settings: TuningSettings, storage: Storage,
                me: Worker, writer: TrialWriter, *, until_complete: bool,
                best: BestTrialDecisions | None = None, after_trial: Callable[[], None] = lambda: None,
                go_on: Callable[[], bool] = lambda: True) -> int:
    """Run queued trials of the family; `until_complete` also waits for the other workers' running
    trials (and runs the ones queued again because their worker died) until none is left. `best` keeps
    the out-of-fold decisions of the best trial this process runs; `go_on` is asked before each claim."""
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(family_study.parent_run_id).info.experiment_id
    processes = settings.fold_processes(len(prepared.reviews.label))
    with fold_scorer(prepared.folds, processes) as scores_of:
        cv_f1 = objective(family_study.family, prepared.folds, scores_of, seed=settings.seed, processes=processes,
                          best=best)
        tag = f" [{me.name} {family_study.family}]" if me.shown else ""  # workers' lines interleave across families

        def done(study: optuna.Study, trial: FrozenTrial) -> None:
            writer.write(experiment_id, family_study.parent_run_id, trial, study.direction.name)
            _print_progress(study, trial, tag)
            after_trial()

        ran = run_queued_trials(storage, family_study.study, cv_f1, TRIAL_FAILURES, me.name, done, go_on)
        if until_complete and (running := len(unfinished(family_study.study))):
            print(f"  waiting for {running} trial{'s' * (running != 1)} running elsewhere (a trial whose worker died "
                  f"is queued again {GRACE_SECONDS} s after its last heartbeat)", flush=True)
        wait, longest = WAIT_SECONDS
        while until_complete and unfinished(family_study.study):
            time.sleep(wait)
            wait = min(2 * wait, longest)
            ran += run_queued_trials(storage, family_study.study, cv_f1, TRIAL_FAILURES, me.name, done, go_on)
    return ran


def _fill_gaps(family_studies: list[FamilyStudy]) -> None:
    """Write the child runs of finished trials that have none (their worker, or the writer, died first), once
    every trial has finished and every child run sent is written; a family registered before a restart too
    (its gaps may be from before it)."""
    client = mlflow.MlflowClient()
    for family_study in family_studies:
        parent = family_study.parent_run_id
        if gaps := log_missing_trial_runs(client, client.get_run(parent).info.experiment_id, parent,
                                          finished_by_workers(family_study.study), family_study.study.direction.name):
            print(f"{family_study.family}: wrote the child runs of {gaps} finished trial{'s' * (gaps != 1)} "
                  f"that had none (their worker, or the child-run writer, died first)", flush=True)


@contextlib.contextmanager
def _written_if_failed(writer: TrialWriter) -> Iterator[None]:
    """A failed run takes back all it wrote: the child runs sent before it failed included, and the models
    handed to the publisher (it publishes in order: once flushed, each is published or failed; undo then finds
    their versions by their runs)."""
    try:
        yield
    except BaseException:
        writer.flush()
        raise


def _registered_result(family: str, name: str, version: str, cv_f1: float) -> FamilyResult:
    made = VersionRecord.of(mlflow.MlflowClient().get_model_version(name, version))
    metrics = mlflow.MlflowClient().get_run(made.run_id).data.metrics
    test_f1 = float("nan") if made.test_f1 is None else made.test_f1
    return FamilyResult(family, cv_f1, metrics.get("train_f1", float("nan")), test_f1,
                        metrics.get("fit_time", 0.0), version)


def _print_progress(study: optuna.Study, trial: FrozenTrial, worker: str) -> None:
    line = f"  trial {trial.number + 1:>3}{worker}"
    with warnings.catch_warnings():  # experimental since Optuna 2.8, and still the only way to ask
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retried = RetryFailedTrialCallback.retried_trial_number(trial)
    if retried is not None:
        line += f" (trial {retried + 1} again: its worker died)"
    if trial.state == TrialState.FAIL:
        print(f"{line}  failed: {trial.user_attrs.get('failed', 'see the log')}", flush=True)
    elif trial.state == TrialState.PRUNED:  # its value is the mean of the folds it got through: not a CV F1
        print(f"{line}  pruned after {trial.user_attrs['pruned_after_folds']} folds "
              f"(mean F1 so far {trial.value:.4f}, below the median)  best={study.best_value:.4f}", flush=True)
    else:
        print(f"{line}  cv_f1={trial.value:.4f}  best={study.best_value:.4f}", flush=True)


def _quiet_optuna() -> None:
    """A failed trial is on its progress line: Optuna's own log of it (a traceback) would bury the progress."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
