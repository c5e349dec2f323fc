"""The tuning run end to end: load → clean → split → tune → evaluate → log → register → promote.

Each family gets one MLflow parent run holding its Optuna study (every trial a nested child run),
the refit best model, its metrics, reports and the model itself; the family with the best CV F1
becomes the candidate for `champion`.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from optuna.trial import TrialState
from optuna_integration.mlflow import MLflowCallback

from review_sentiment.constants import BEST_PARAMS_ARTIFACT, CHAMPION
from review_sentiment.data.reviews import ReviewDataError, Reviews, Split, data_digest, load_reviews, split_reviews
from review_sentiment.modeling.families import build_pipeline, require_words
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.tracking.model_logging import (
    compact_for_saving,
    log_trained_model,
    model_size_bytes,
    quiet_mlflow_warnings,
    training_dataset,
)
from review_sentiment.tracking.orphans import close_orphaned_runs, closed_orphans_line, process_tags
from review_sentiment.tracking.promotion import Promotion, promote_if_better
from review_sentiment.tracking.registry import register
from review_sentiment.tracking.undo import Writes, undone_on_failure
from review_sentiment.training.reports import confusion_figure, report_text, top_terms
from review_sentiment.training.study import tune_family
from text_cleaning import clean_texts


@dataclass(frozen=True)
class TuningSettings:
    """What the tuning CLI's flags choose."""

    data: Path
    text_col: str
    rating_col: str
    models: list[str]
    trials: int
    folds: int
    test_size: float
    seed: int
    n_jobs: int
    experiment: str
    registered_model: str


@dataclass(frozen=True)
class FamilyResult:
    """One family's line of the summary table, and the version that decides promotion."""

    family: str
    cv_f1: float
    train_f1: float
    test_f1: float
    fit_time: float
    version: str


def run_tuning(settings: TuningSettings) -> None:
    """Raises ReviewDataError for unusable data: before anything is written to MLflow where it can be
    told up front, else after taking back what this run wrote (no half-state either way)."""
    started = time.perf_counter()
    reviews = load_reviews(settings.data, settings.text_col, settings.rating_col)
    split = split_reviews(reviews, settings.test_size, settings.folds, settings.seed)
    print(f"Loaded {reviews.rows_read} rows from {reviews.path}: dropped {reviews.dropped_missing} "
          f"with no text or rating and {reviews.dropped_duplicates} duplicates; "
          f"{len(reviews.label)} reviews, {reviews.label.mean():.1%} positive")
    print(f"Split: {len(split.y_train)} train / {len(split.y_test)} test (stratified, seed {settings.seed})")
    clean_train = clean_texts(split.X_train)
    require_words(clean_train, str(reviews.path))

    _quiet_library_warnings()
    mlflow.set_experiment(settings.experiment)
    print(f"MLflow: experiment {settings.experiment!r} at {mlflow.get_tracking_uri()}")
    if closed := closed_orphans_line(close_orphaned_runs(settings.experiment)):
        print(closed)
    reviews_digest = data_digest(reviews.frame)
    with undone_on_failure() as writes:
        results = [tune_and_register(family, reviews, reviews_digest, split, clean_train, settings, writes)
                   for family in settings.models]
        best = max(results, key=lambda r: r.cv_f1)
        candidate = mlflow.MlflowClient().get_model_version(settings.registered_model, best.version)
        promotion = promote_if_better(settings.registered_model, candidate, split.X_test, split.y_test)
    print_summary(results, settings.registered_model, best.family, promotion, time.perf_counter() - started)


def tune_and_register(
    family: str, reviews: Reviews, reviews_digest: str, split: Split, clean_train: list[str],
    settings: TuningSettings, writes: Writes,
) -> FamilyResult:
    """One parent run: the Optuna study (trials as child runs), refit, evaluate, log, register. The
    version is tagged with the digest of all the reviews, so a retrain on the same data finds it."""
    print(f"\n{family}: {settings.trials} trials, {settings.folds}-fold CV")
    with mlflow.start_run(run_name=family) as run:
        writes.runs.append(run.info.run_id)
        mlflow.set_tags({"family": family, "data_path": str(reviews.path), **process_tags()})
        mlflow.log_params({"family": family, "seed": settings.seed, "folds": settings.folds,
                           "test_size": settings.test_size, "trials": settings.trials})
        train_frame = reviews.frame.loc[split.X_train.index]
        dataset = training_dataset(train_frame, str(reviews.path), name=f"{reviews.path.stem}-train")
        mlflow.log_input(dataset, context="training")
        study = tune_family(
            family, clean_train, split.y_train, trials=settings.trials, folds=settings.folds,
            seed=settings.seed, n_jobs=settings.n_jobs, callbacks=[_trial_logger(), _print_progress],
        )
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            raise ReviewDataError(f"{reviews.path}: every {family} trial failed: no TF-IDF configuration tried kept "
                                  f"a word on every CV fold (the reviews share too few words; add data)")

        pipeline = build_pipeline(family, study.best_params, settings.seed)
        fit_started = time.perf_counter()
        pipeline.fit(split.X_train, split.y_train)
        fit_time = time.perf_counter() - fit_started
        compact_for_saving(pipeline)
        test_pred = pipeline.predict(split.X_test)
        metrics = {
            "cv_f1_macro": study.best_value,
            "train_f1": macro_f1(split.y_train, pipeline.predict(split.X_train)),
            "test_f1": macro_f1(split.y_test, test_pred),
            "fit_time": fit_time,
        }
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_dict(study.best_params, BEST_PARAMS_ARTIFACT)
        mlflow.log_metrics(metrics)
        mlflow.log_text(report_text(split.y_test, test_pred), "classification_report.txt")
        mlflow.log_figure(confusion_figure(split.y_test, test_pred, f"{family} (test)"), "confusion_matrix.png")
        mlflow.log_dict(top_terms(pipeline), "top_terms.json")
        model_info = log_trained_model(pipeline, reviews, split, split.X_train.iloc[:3].tolist(), settings.seed)
        mlflow.log_metric("model_size_bytes", model_size_bytes(model_info))

    version = register(model_info, settings.registered_model, {
        "family": family, "cv_f1_macro": f"{metrics['cv_f1_macro']:.4f}",
        "test_f1": f"{metrics['test_f1']:.4f}", "data_digest": dataset.digest,
        "reviews_digest": reviews_digest,
        "run_id": run.info.run_id, "source": "tuning",
    })
    writes.versions.append(version)
    print(f"  best CV F1 {study.best_value:.4f}, test F1 {metrics['test_f1']:.4f} "
          f"-> {settings.registered_model} v{version.version}")
    return FamilyResult(family, study.best_value, metrics["train_f1"], metrics["test_f1"],
                        fit_time, version.version)


def print_summary(results: list[FamilyResult], model_name: str, candidate: str,
                  promotion: Promotion, seconds: float) -> None:
    print("\n" + "=" * 78)
    for r in results:
        print(f"{r.family:<18} | CV F1={r.cv_f1:.4f} | Train F1={r.train_f1:.4f} | "
              f"Test F1={r.test_f1:.4f} | {model_name} v{r.version}")
    print("=" * 78)
    print(f"Candidate (best CV F1): {candidate}. {promotion.reason}.")
    print(f"Champion: models:/{model_name}@{CHAMPION} = v{promotion.champion}  ({seconds:.1f}s total)")


def _trial_logger() -> MLflowCallback:
    """Each trial becomes a child run of the family's parent run."""
    return MLflowCallback(metric_name="cv_f1_macro", create_experiment=False, mlflow_kwargs={"nested": True})


def _print_progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    if trial.state == TrialState.FAIL:
        print(f"  trial {trial.number + 1:>3}  failed: {trial.user_attrs.get('failed', 'see the log')}", flush=True)
        return
    if trial.state == TrialState.PRUNED:  # its value is the mean of the folds it got through: not a CV F1
        print(f"  trial {trial.number + 1:>3}  pruned after {trial.user_attrs['pruned_after_folds']} folds "
              f"(mean F1 so far {trial.value:.4f}, below the median)  best={study.best_value:.4f}", flush=True)
        return
    print(f"  trial {trial.number + 1:>3}  cv_f1={trial.value:.4f}  best={study.best_value:.4f}", flush=True)


def _quiet_library_warnings() -> None:
    """Keep the progress readable: library deprecation notices are for us, not for users."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is on its progress line, not a traceback
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    quiet_mlflow_warnings()
