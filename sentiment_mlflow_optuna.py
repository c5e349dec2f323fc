"""Tune TF-IDF + Logistic Regression / Naive Bayes / Linear SVM sentiment models with Optuna,
track every trial in MLflow, register each family's best model and promote the champion.

    python sentiment_mlflow_optuna.py                     # the bundled sample data
    python sentiment_mlflow_optuna.py --data reviews.csv --text-col Review --rating-col Rating
    mlflow ui                                             # then open http://127.0.0.1:5000
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import optuna
from optuna_integration.mlflow import MLflowCallback

import registry
from evaluation import confusion_figure, macro_f1, report_text, top_terms
from model_families import FAMILIES, build_pipeline
from review_data import (DEFAULT_RATING_COL, DEFAULT_TEXT_COL, SAMPLE_DATA, ReviewDataError, Reviews,
                         Split, load_reviews, split_reviews)
from text_cleaning import clean_texts
from tuning import tune_family

EXPERIMENT = "FLIPKART_SENTIMENT_ANALYSIS"


@dataclass(frozen=True)
class FamilyResult:
    family: str
    cv_f1: float
    train_f1: float
    test_f1: float
    fit_time: float
    version: str


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=SAMPLE_DATA, help="review CSV (.tsv: tab-separated)")
    parser.add_argument("--text-col", default=DEFAULT_TEXT_COL, help="review text column")
    parser.add_argument("--rating-col", default=DEFAULT_RATING_COL, help="1–5 star rating column")
    parser.add_argument("--models", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                        metavar="FAMILY", help=f"families to tune: {' '.join(FAMILIES)}")
    parser.add_argument("--trials", type=_at_least(1), default=20, help="Optuna trials per family")
    parser.add_argument("--folds", type=_at_least(2), default=5, help="stratified CV folds")
    parser.add_argument("--test-size", type=_fraction, default=0.3, help="held-out test share")
    parser.add_argument("--seed", type=int, default=42, help="fixes split, folds, sampler and models")
    parser.add_argument("--n-jobs", type=int, default=1,
                        help="processes for a trial's CV folds (-1: all cores); slower than 1 on 2 cores today")
    parser.add_argument("--experiment", default=EXPERIMENT, help="MLflow experiment name")
    parser.add_argument("--registered-model", default=registry.MODEL_NAME, help="registry model name")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        reviews = load_reviews(args.data, args.text_col, args.rating_col)
        split = split_reviews(reviews, args.test_size, args.folds, args.seed)
    except ReviewDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Loaded {reviews.rows_read} rows from {reviews.path}: dropped {reviews.dropped_missing} "
          f"with no text or rating and {reviews.dropped_duplicates} duplicates; "
          f"{len(reviews.label)} reviews, {reviews.label.mean():.1%} positive")
    print(f"Split: {len(split.y_train)} train / {len(split.y_test)} test (stratified, seed {args.seed})")
    clean_train = clean_texts(split.X_train)

    _quiet_library_warnings()
    mlflow.set_experiment(args.experiment)
    print(f"MLflow: experiment {args.experiment!r} at {mlflow.get_tracking_uri()}")
    results = [tune_and_register(family, reviews, split, clean_train, args) for family in args.models]

    best = max(results, key=lambda r: r.cv_f1)
    candidate = mlflow.MlflowClient().get_model_version(args.registered_model, best.version)
    promotion = registry.promote_if_better(
        args.registered_model, candidate, best.test_f1, split.X_test, split.y_test
    )
    print_summary(results, args.registered_model, best.family, promotion, time.perf_counter() - started)
    return 0


def tune_and_register(
    family: str, reviews: Reviews, split: Split, clean_train: list[str], args: argparse.Namespace
) -> FamilyResult:
    """One parent run: the Optuna study (trials as child runs), refit, evaluate, log, register."""
    print(f"\n{family}: {args.trials} trials, {args.folds}-fold CV")
    with mlflow.start_run(run_name=family) as run:
        mlflow.set_tags({"family": family, "data_path": str(reviews.path)})
        mlflow.log_params({"family": family, "seed": args.seed, "folds": args.folds,
                           "test_size": args.test_size, "trials": args.trials})
        train_frame = reviews.frame.loc[split.X_train.index]
        dataset = mlflow.data.from_pandas(train_frame, source=str(reviews.path), targets="label",
                                          name=f"{reviews.path.stem}-train")
        mlflow.log_input(dataset, context="training")
        study = tune_family(
            family, clean_train, split.y_train, trials=args.trials, folds=args.folds,
            seed=args.seed, n_jobs=args.n_jobs, callbacks=[_trial_logger(), _print_progress],
        )

        pipeline = build_pipeline(family, study.best_params, args.seed)
        fit_started = time.perf_counter()
        pipeline.fit(split.X_train, split.y_train)
        fit_time = time.perf_counter() - fit_started
        registry.slim(pipeline)
        test_pred = pipeline.predict(split.X_test)
        metrics = {
            "cv_f1_macro": study.best_value,
            "train_f1": macro_f1(split.y_train, pipeline.predict(split.X_train)),
            "test_f1": macro_f1(split.y_test, test_pred),
            "fit_time": fit_time,
        }
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_dict(study.best_params, registry.BEST_PARAMS_ARTIFACT)
        mlflow.log_metrics(metrics)
        mlflow.log_text(report_text(split.y_test, test_pred), "classification_report.txt")
        mlflow.log_figure(confusion_figure(split.y_test, test_pred, f"{family} (test)"), "confusion_matrix.png")
        mlflow.log_dict(top_terms(pipeline), "top_terms.json")
        model_info = registry.log_sentiment_model(pipeline, split.X_train.iloc[:3].tolist())
        mlflow.log_metric("model_size_bytes", registry.model_size_bytes(model_info))

    version = registry.register(model_info, args.registered_model, {
        "family": family, "cv_f1_macro": f"{metrics['cv_f1_macro']:.4f}",
        "test_f1": f"{metrics['test_f1']:.4f}", "data_digest": dataset.digest,
        "run_id": run.info.run_id, "source": "tuning",
    })
    print(f"  best CV F1 {study.best_value:.4f}, test F1 {metrics['test_f1']:.4f} "
          f"-> {args.registered_model} v{version.version}")
    return FamilyResult(family, study.best_value, metrics["train_f1"], metrics["test_f1"],
                        fit_time, version.version)


def print_summary(results: list[FamilyResult], model_name: str, candidate: str,
                  promotion: registry.Promotion, seconds: float) -> None:
    print("\n" + "=" * 78)
    for r in results:
        print(f"{r.family:<18} | CV F1={r.cv_f1:.4f} | Train F1={r.train_f1:.4f} | "
              f"Test F1={r.test_f1:.4f} | {model_name} v{r.version}")
    print("=" * 78)
    print(f"Candidate (best CV F1): {candidate}. {promotion.reason}.")
    champion = registry.current_champion(model_name)
    print(f"Champion: models:/{model_name}@{registry.CHAMPION} = v{champion.version}  ({seconds:.1f}s total)")


def _trial_logger() -> MLflowCallback:
    """Each trial becomes a child run of the family's parent run."""
    return MLflowCallback(metric_name="cv_f1_macro", create_experiment=False, mlflow_kwargs={"nested": True})


def _print_progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    print(f"  trial {trial.number + 1:>3}  cv_f1={trial.value:.4f}  best={study.best_value:.4f}", flush=True)


def _quiet_library_warnings() -> None:
    """Keep the progress readable: library deprecation notices are for us, not for users."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    registry.quiet_mlflow_warnings()


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
