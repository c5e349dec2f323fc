"""The scheduled retrain as a Prefect flow: lineage → load → split → trusted feedback → hyperparameters →
fit, log and register (`training.release`, the tuning run's path) → promote by the one rule.

A retrain continues the current champion's lineage: the file it was trained from, read the same way,
with the same held-out slice, unless `data_path` names another file (whose model then competes only with
`allow_new_data`). A model identical to a registered version is not registered again: that version is
reused, and a retrain whose version was already decided is skipped.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State

from review_sentiment.constants import (
    DEFAULT_RATING_COL,
    DEFAULT_TEXT_COL,
    MODEL_NAME,
    RETRAIN_EXPERIMENT,
    RETRAIN_FLOW,
    SAMPLE_DATA,
)
from review_sentiment.data.reviews import ReviewDataError, Reviews, Split, data_digest, load_reviews, split_reviews
from review_sentiment.data.reviews import with_feedback as add_feedback
from review_sentiment.databases import without_password
from review_sentiment.modeling.calibration import FOLDS as CALIBRATION_FOLDS
from review_sentiment.monitoring.drift import FEEDBACK_QUORUM
from review_sentiment.monitoring.logged import read_log, trusted
from review_sentiment.orchestration.crashed_runs import mark_crashed_runs, record_process
from review_sentiment.orchestration.task_policies import cpu_step, data_errors_in_one_line, io_step
from review_sentiment.tracking.orphans import close_orphaned_runs, closed_orphans_line, process_tags
from review_sentiment.tracking.promotion import Promotion, decide_pending, promote_if_better
from review_sentiment.tracking.records import Decision, Lineage
from review_sentiment.tracking.registry import current_champion, lineage_of, tuned_params
from review_sentiment.training.release import Released, TrainingData, release
from text_cleaning import clean_texts

FAMILY = "LogisticRegression"
PUBLISHED_DEFAULTS: dict[str, Any] = {
    "tfidf_max_features": 5000, "tfidf_min_df": 3, "tfidf_max_df": 0.9, "tfidf_ngram_max": 2,
    "tfidf_sublinear_tf": False, "model_C": 0.5, "model_solver": "lbfgs",
}
DEFAULT_TEST_SIZE, DEFAULT_SEED = 0.3, 42


@dataclass(frozen=True)
class RetrainOutcome:
    status: str  # "registered" or "skipped"
    message: str
    version: str | None = None
    promoted: bool = False
    test_f1: float | None = None


@io_step(name="choose lineage")
def choose_lineage(data_path: str | None, text_col: str | None, rating_col: str | None, test_size: float | None,
                   seed: int | None) -> tuple[Lineage, str]:
    """The champion's lineage, with whatever the caller gave instead; the bundled sample when there is no
    champion (or it predates lineages) and no file is given. And where it came from, in words."""
    champion = current_champion(MODEL_NAME)
    theirs = None if champion is None else lineage_of(champion)
    given: dict[str, Any] = {k: v for k, v in {"data": data_path, "text_col": text_col, "rating_col": rating_col,
                                               "held_out": test_size, "seed": seed}.items() if v is not None}
    if champion is not None and theirs is not None \
            and str(Path(given.get("data", theirs.data)).resolve()) == theirs.data:
        base, where = theirs, f"champion v{champion.version}'s lineage"
    else:
        base = Lineage.of(SAMPLE_DATA, DEFAULT_TEXT_COL, DEFAULT_RATING_COL, DEFAULT_TEST_SIZE, DEFAULT_SEED)
        where = "the given data" if "data" in given else "the bundled sample (no champion lineage to continue)"
    merged = {**vars(base), **given}
    return Lineage.of(**merged), where


@io_step(name="load data")
def load_data(lineage: Lineage) -> Reviews:
    return load_reviews(lineage.data, lineage.text_col, lineage.rating_col)


@cpu_step(name="split")
def split(reviews: Reviews, lineage: Lineage) -> Split:
    return split_reviews(reviews, lineage.held_out, folds=2, seed=lineage.seed)  # no CV here: 2 per class suffices


@io_step(name="read feedback")
def read_feedback(feedback_log: str, trust_anonymous: bool) -> tuple[pd.DataFrame, int]:
    """The fed-back labels trusted to train and judge, in the order they came; and how many were not."""
    try:
        logged = read_log(feedback_log)
    except (FileNotFoundError, ValueError) as err:
        raise ReviewDataError(str(err)) from None
    fed = logged.dropna(subset=["true_label"]).sort_values("feedback_time", kind="stable")
    kept = trusted(fed["giver"], trust_anonymous)
    return fed[kept], int((~kept).sum())


@io_step(name="choose hyperparameters")
def choose_hyperparameters(overrides: dict[str, Any] | None, reviews_digest: str
                           ) -> tuple[dict[str, Any], str, int]:
    """The tuning script's Logistic Regression for these reviews when there is one (see
    `tuned_params`), else the published defaults; which, and why, in words; and the folds to calibrate
    on: the tuning run's, so that a retrain of its configuration on its data is its version."""
    tuned = tuned_params(MODEL_NAME, FAMILY, reviews_digest)
    params, source = (tuned.params, tuned.why) if tuned else (PUBLISHED_DEFAULTS, "published defaults")
    if overrides:
        params, source = {**params, **overrides}, f"{source} + overrides {sorted(overrides)}"
    return dict(params), source, tuned.folds if tuned else CALIBRATION_FOLDS


@io_step(name="fit, log and register")
def fit_log_register(data: TrainingData, params: dict[str, Any], source: str, origin: dict[str, str]) -> Released:
    """One MLflow run per flow run (a failure inside marks it FAILED, never leaves it RUNNING), holding
    the model or naming the identical version it reused."""
    mlflow.set_experiment(RETRAIN_EXPERIMENT)
    if closed := closed_orphans_line(close_orphaned_runs(RETRAIN_EXPERIMENT)):
        get_run_logger().warning(closed)
    with mlflow.start_run(run_name=f"retrain-{flow_run.get_name() or 'local'}"):
        mlflow.set_tags({**process_tags(), "prefect.flow_run_id": str(flow_run.get_id()),
                         "hyperparameter_source": source, "family": FAMILY,
                         "data_digest": data.training_dataset.digest, **origin})
        mlflow.log_params(params)
        released = release(MODEL_NAME, FAMILY, params, data.lineage.seed, data, "retrain")
        decided = released.reused and Decision.of(released.version) is not None
        mlflow.set_tag("outcome", "skipped" if decided else "registered")
    return released


@io_step(name="promote")
def promote(released: Released, data: TrainingData, allow_new_data: bool, unlocked: bool) -> Promotion:
    return promote_if_better(MODEL_NAME, released.version, data.protected, data.feedback_evidence,
                             allow_new_data=allow_new_data, unlocked=unlocked)


@flow(name=RETRAIN_FLOW, log_prints=True)
def retrain_logistic(
    data_path: str | None = None,
    text_col: str | None = None,
    rating_col: str | None = None,
    test_size: float | None = None,
    seed: int | None = None,
    overrides: dict[str, Any] | None = None,
    feedback_log: str | None = None,
    triggered_by: str | None = None,
    trust_anonymous_feedback: bool = False,
    allow_new_data: bool = False,
    unlocked_promotion: bool = False,
) -> RetrainOutcome | State:
    """`data_path` … `seed`: the lineage to train (default: the champion's); `feedback_log`: also train on
    the reviews the service got trusted true labels for (anonymous ones with `trust_anonymous_feedback`);
    `triggered_by`: the monitoring check that asked for this retrain (tagged on its run)."""
    data_errors_in_one_line()
    logger = get_run_logger()
    record_process()
    for line in mark_crashed_runs() + decide_pending(MODEL_NAME, unlocked=unlocked_promotion):
        logger.warning(line)
    lineage, where = choose_lineage(data_path, text_col, rating_col, test_size, seed)
    logger.info("Data: %s (%s)", lineage.data, where)
    reviews = load_data(lineage)
    data = TrainingData(reviews, split(reviews, lineage), lineage, data_digest(reviews.frame), clean_texts)
    origin = {"feedback_rows": "0"} | ({"triggered_by": triggered_by} if triggered_by else {})
    if feedback_log is not None:
        fed, untrusted = read_feedback(feedback_log, trust_anonymous_feedback)
        note = f"{len(fed)} trusted fed-back labels in {without_password(feedback_log)} ({untrusted} not trusted)"
        if len(fed) >= FEEDBACK_QUORUM:
            traffic, with_fed, feedback = add_feedback(reviews, data.split, fed["review"], fed["true_label"],
                                                       lineage.held_out, lineage.seed)
            data = TrainingData(traffic, with_fed, lineage, data.reviews_digest, clean_texts, feedback)
            origin["feedback_rows"] = str(len(feedback.y_train))
            logger.info("Feedback: %s: %d train, %d held out to judge", note, len(feedback.y_train),
                        len(feedback.y_test))
        else:
            logger.info("Feedback: %s, fewer than the quorum of %d: training on the file alone", note,
                        FEEDBACK_QUORUM)
    params, source, folds = choose_hyperparameters(overrides, data.reviews_digest)
    data = dataclasses.replace(data, calibration_fold_count=folds)
    logger.info("Hyperparameters: %s %s", source, params)
    released = fit_log_register(data, params, source, origin)
    version = str(released.version.version)
    if released.reused and (decided := Decision.of(released.version)) is not None:
        message = (f"data, code and parameters unchanged: identical to v{version}, already decided "
                   f"({decided.reason})")
        logger.info(message)
        return Completed(name="Skipped", message=message[:500], data=RetrainOutcome("skipped", message, version))
    promotion = promote(released, data, allow_new_data, unlocked_promotion)
    made = f"reused v{version} (identical, undecided)" if released.reused else f"registered v{version}"
    message = f"{made} (test F1 {released.record.test_f1:.4f} on its held-out slice); {promotion.reason}"
    logger.info(message)
    return RetrainOutcome("registered", message, version, promotion.promoted, released.record.test_f1)
