"""The scheduled retrain as a Prefect flow: load → clean and label → split → TF-IDF → train
Logistic Regression → evaluate → log to MLflow → register and promote.

It reuses the tuning script's core (cleaning, loading, pipelines, registry rules). A retrain
registers a new version only when something changed: data, code or hyperparameters are hashed
into a fingerprint, and a run whose fingerprint matches the last registered retrain skips.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import PandasDataset
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline

from review_sentiment.constants import DEFAULT_RATING_COL, DEFAULT_TEXT_COL, MODEL_NAME, RETRAIN_EXPERIMENT, SAMPLE_DATA
from review_sentiment.data.reviews import ReviewDataError, Reviews, Split, load_reviews, split_reviews, with_feedback
from review_sentiment.databases import without_password
from review_sentiment.modeling.families import build_pipeline, left_no_words
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.monitoring.logged import read_log
from review_sentiment.orchestration.task_policies import cpu_step, data_errors_in_one_line, io_step
from review_sentiment.tracking.model_logging import (
    compact_for_saving,
    log_sentiment_model,
    log_trained_model,
    training_dataset,
)
from review_sentiment.tracking.orphans import close_orphaned_runs, closed_orphans_line, process_tags
from review_sentiment.tracking.promotion import Promotion, promote_if_better
from review_sentiment.tracking.registry import latest_version, register, tuned_params
from text_cleaning import clean_texts

FLOW_NAME = "Flipkart Sentiment Analysis Flow (Logistic)"
FAMILY = "LogisticRegression"
PUBLISHED_DEFAULTS: dict[str, Any] = {
    "tfidf_max_features": 5000, "tfidf_min_df": 3, "tfidf_max_df": 0.9, "tfidf_ngram_max": 2,
    "tfidf_sublinear_tf": False, "model_C": 0.5, "model_solver": "lbfgs",
}
# The code that decides what a retrain produces: the modules of cleaning, loading and labelling, the
# pipeline, the metric, how the model is logged, when it is promoted, and this flow. A change to any
# of their files changes the fingerprint, so the next run retrains. Found from the functions this flow
# calls rather than named as files, so a move follows along.
MODEL_CODE: tuple[ModuleType, ...] = tuple(
    sys.modules[function.__module__]
    for function in (clean_texts, load_reviews, build_pipeline, macro_f1, log_sentiment_model, promote_if_better)
) + (sys.modules[__name__],)


@dataclass(frozen=True)
class RetrainOutcome:
    status: str  # "registered" or "skipped"
    message: str
    version: str | None = None
    promoted: bool = False
    test_f1: float | None = None


@io_step(name="load data")
def load_data(path: str, text_col: str, rating_col: str, feedback_log: str | None) -> tuple[Reviews, int]:
    """The CSV's reviews, plus (with `feedback_log`) every review the service logged that got a true
    label; and how many rows came from feedback."""
    reviews = load_reviews(path, text_col, rating_col)
    if feedback_log is None:
        return reviews, 0
    try:
        logged = read_log(feedback_log)
    except (FileNotFoundError, ValueError) as err:
        raise ReviewDataError(str(err)) from None
    fed = logged.dropna(subset=["true_label"]).sort_values("feedback_time", kind="stable")
    return with_feedback(reviews, fed["review"], fed["true_label"])


@cpu_step(name="clean and label")
def clean_and_label(reviews: Reviews) -> pd.Series:
    """Clean every review once (labels came with loading: ratings 1–2 → 0, 3–5 → 1)."""
    return pd.Series(clean_texts(reviews.text), index=reviews.text.index)


@cpu_step(name="split")
def split(reviews: Reviews, test_size: float, seed: int) -> Split:
    return split_reviews(reviews, test_size, folds=2, seed=seed)  # no CV here: 2 per class suffices


@cpu_step(name="describe data")
def describe_data(reviews: Reviews, feedback_log: str | None, fed: int) -> PandasDataset:
    """The reviews as the MLflow dataset the run logs (its digest covers every row); with feedback, its
    name says how many rows came from it."""
    if feedback_log is None:
        return training_dataset(reviews.frame, str(reviews.path))
    return training_dataset(reviews.frame, f"{reviews.path} + feedback in {without_password(feedback_log)}",
                            name=f"{reviews.path.stem} + {fed} fed-back reviews")


@io_step(name="choose hyperparameters")
def choose_hyperparameters(overrides: dict[str, Any] | None, reviews_digest: str) -> tuple[dict[str, Any], str]:
    """The tuning script's Logistic Regression for these reviews when there is one (see
    `tuned_params`), else the published defaults; and which, and why, in words."""
    tuned = tuned_params(MODEL_NAME, FAMILY, reviews_digest)
    params, source = (tuned.params, tuned.why) if tuned else (PUBLISHED_DEFAULTS, "published defaults")
    if overrides:
        params, source = {**params, **overrides}, f"{source} + overrides {sorted(overrides)}"
    return dict(params), source


@dataclass(frozen=True)
class Fingerprint:
    dataset: PandasDataset  # what gets logged as the run's input; its digest feeds `value`
    value: str  # data + code + parameters
    trained_as: str | None  # the registered retrain version with this same value, if any


@io_step(name="check for changes")
def fingerprint(dataset: PandasDataset, params: dict[str, Any], seed: int, test_size: float) -> Fingerprint:
    """Hash data, code and parameters, and find a registered retrain with the same hash. Any one,
    not only the last: a scheduled retrain on the CSV alone, after a monitor-triggered one on the
    CSV plus feedback, must not train the CSV's model again and undo what feedback taught."""
    digest = hashlib.sha256(dataset.digest.encode())
    for module in MODEL_CODE:
        digest.update(Path(module.__file__).read_bytes())
    digest.update(json.dumps({"params": params, "seed": seed, "test_size": test_size}, sort_keys=True).encode())
    value = digest.hexdigest()[:16]
    same = latest_version(MODEL_NAME, source="retrain", fingerprint=value)
    return Fingerprint(dataset, value, None if same is None else str(same.version))


@cpu_step(name="TF-IDF")
def vectorize(pipeline: Pipeline, clean_train: list[str], source: str) -> TfidfVectorizer:
    """Fit the TF-IDF; one that keeps no word (too few shared words for min_df/max_df) is the data's doing."""
    tfidf = pipeline.named_steps["tfidf"]
    try:
        return tfidf.fit(clean_train)
    except ValueError as err:
        if not left_no_words(err):
            raise
        raise ReviewDataError(f"{source}: after cleaning, no word is in at least {tfidf.min_df} and at most "
                              f"{tfidf.max_df:.0%} of the training reviews; nothing to learn from") from None


@cpu_step(name="train Logistic Regression")
def train(pipeline: Pipeline, tfidf: TfidfVectorizer, clean_train: list[str], y_train) -> Pipeline:
    """Fit the classifier on the TF-IDF features; the raw-text pipeline around both is what gets logged."""
    pipeline.named_steps["model"].fit(tfidf.transform(clean_train), y_train)
    return compact_for_saving(pipeline)


@cpu_step(name="evaluate")
def evaluate(pipeline: Pipeline, data: Split) -> dict[str, float]:
    return {"train_f1": macro_f1(data.y_train, pipeline.predict(data.X_train)),
            "test_f1": macro_f1(data.y_test, pipeline.predict(data.X_test))}


@io_step(name="log to MLflow")
def log_run(pipeline: Pipeline | None, reviews: Reviews, data: Split, params: dict[str, Any], source: str,
            metrics: dict[str, float], fingerprint: Fingerprint, outcome: str,
            origin: dict[str, str]) -> tuple[str, Any]:
    """One MLflow run per flow run; a failure inside marks it FAILED, never leaves it RUNNING. With a
    model it also records the reviews that model trained on, for fair promotions later."""
    mlflow.set_experiment(RETRAIN_EXPERIMENT)
    if closed := closed_orphans_line(close_orphaned_runs(RETRAIN_EXPERIMENT)):
        get_run_logger().warning(closed)
    with mlflow.start_run(run_name=f"retrain-{flow_run.get_name() or 'local'}") as run:
        mlflow.set_tags({**process_tags(), "prefect.flow_run_id": str(flow_run.get_id()), "outcome": outcome,
                         "fingerprint": fingerprint.value, "data_digest": fingerprint.dataset.digest,
                         "hyperparameter_source": source, "family": FAMILY, **origin})
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        mlflow.log_input(fingerprint.dataset, context="training")
        model_info = None
        if pipeline:
            model_info = log_trained_model(pipeline, reviews, data, reviews.text.iloc[:3].tolist())
    return run.info.run_id, model_info


@io_step(name="register and promote")
def register_and_promote(model_info, run_id: str, metrics: dict[str, float], fingerprint: Fingerprint,
                         data: Split) -> tuple[str, Promotion]:
    version = register(model_info, MODEL_NAME, {
        "family": FAMILY, "source": "retrain", "fingerprint": fingerprint.value,
        "data_digest": fingerprint.dataset.digest, "reviews_digest": fingerprint.dataset.digest,
        "test_f1": f"{metrics['test_f1']:.4f}", "run_id": run_id,
    })
    promotion = promote_if_better(MODEL_NAME, version, data.X_test, data.y_test)
    mlflow.MlflowClient().set_model_version_tag(MODEL_NAME, version.version, "promotion", promotion.reason)
    return str(version.version), promotion


@flow(name=FLOW_NAME, log_prints=True)
def retrain_logistic(
    data_path: str = str(SAMPLE_DATA),
    text_col: str = DEFAULT_TEXT_COL,
    rating_col: str = DEFAULT_RATING_COL,
    test_size: float = 0.3,
    seed: int = 42,
    overrides: dict[str, Any] | None = None,
    feedback_log: str | None = None,
    triggered_by: str | None = None,
) -> RetrainOutcome:
    """`feedback_log`: also train on the reviews the service got true labels for; `triggered_by`: the
    monitoring check that asked for this retrain (tagged on its run)."""
    data_errors_in_one_line()
    logger = get_run_logger()
    reviews, fed = load_data(data_path, text_col, rating_col, feedback_log)
    origin = {"feedback_rows": str(fed)} | ({"triggered_by": triggered_by} if triggered_by else {})
    clean = clean_and_label(reviews)
    data = split(reviews, test_size, seed)
    clean_train = clean.loc[data.X_train.index].tolist()
    dataset = describe_data(reviews, feedback_log, fed)
    params, source = choose_hyperparameters(overrides, dataset.digest)
    logger.info("Hyperparameters: %s %s", source, params)
    changes = fingerprint(dataset, params, seed, test_size)
    if changes.trained_as is not None:
        log_run(None, reviews, data, params, source, {}, changes, "skipped", origin)
        message = f"data, code and parameters unchanged: already trained as v{changes.trained_as} ({changes.value})"
        logger.info(message)
        return RetrainOutcome("skipped", message)

    pipeline = build_pipeline(FAMILY, params, seed)
    started = time.perf_counter()
    tfidf = vectorize(pipeline, clean_train, data_path)
    pipeline = train(pipeline, tfidf, clean_train, data.y_train)
    metrics = evaluate(pipeline, data) | {"fit_time": time.perf_counter() - started}
    run_id, model_info = log_run(pipeline, reviews, data, params, source, metrics, changes, "registered", origin)
    version, promotion = register_and_promote(model_info, run_id, metrics, changes, data)
    message = (f"registered v{version} (train F1 {metrics['train_f1']:.4f}, test F1 {metrics['test_f1']:.4f}); "
               f"{promotion.reason}")
    logger.info(message)
    return RetrainOutcome("registered", message, version, promotion.promoted, metrics["test_f1"])
