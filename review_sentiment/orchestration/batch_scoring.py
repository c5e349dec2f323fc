"""Batch scoring as a Prefect flow: the registry's champion labels a CSV of new reviews."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from sklearn.pipeline import Pipeline

from review_sentiment.constants import DEFAULT_MODEL_URI, DEFAULT_TEXT_COL, LABEL_NAMES, SCORING_EXPERIMENT
from review_sentiment.data.reviews import ReviewDataError, load_texts
from review_sentiment.modeling.calibration import Calibration
from review_sentiment.modeling.linear import predict_with_scores
from review_sentiment.orchestration.task_policies import cpu_step, data_errors_in_one_line, io_step
from review_sentiment.tracking.model_loading import RefusedModel, load_calibration, load_pipeline
from review_sentiment.tracking.model_uri import ModelRef


def check_paths(input_path: str, output_path: str) -> None:
    """Mistakes in the paths, found before anything is read or scored (a data error: never retried)."""
    source, target = Path(input_path), Path(output_path)
    if not source.is_file():
        raise ReviewDataError(f"{source}: {'not a file' if source.exists() else 'file not found'}")
    if target.resolve() == source.resolve():
        raise ReviewDataError(f"{target}: --output is the input file; write the predictions elsewhere")
    if target.is_dir():
        raise ReviewDataError(f"{target}: is a folder; --output names the CSV file to write")
    if not target.parent.is_dir():
        raise ReviewDataError(f"{target.parent}: no such folder for --output")
    if not os.access(target.parent, os.W_OK):
        raise ReviewDataError(f"{target.parent}: cannot write the predictions there (permission denied)")


@io_step(name="read new reviews")
def read_reviews(path: str, text_col: str) -> pd.Series[str]:
    return load_texts(path, text_col)


@io_step(name="load champion")
def load_model(model_uri: str) -> tuple[Pipeline, Calibration | None, str]:
    """The sklearn flavour and its calibration (None for a version logged before calibration), for
    probabilities; plus the registry version it resolved to."""
    version = ModelRef.parse(model_uri).resolve()
    if version is None:
        raise ReviewDataError(f"{model_uri}: no version holds that alias yet "
                              f"(run the tuning script or a retrain first)")
    try:
        return load_pipeline(version), load_calibration(version), str(version.version)
    except RefusedModel as err:
        raise ReviewDataError(f"{model_uri}: refused, {err}") from None


@cpu_step(name="score")
def score(model, texts: pd.Series, calibration: Calibration | None = None) -> pd.DataFrame:
    """One row out per row in; rows with no text get no label rather than a made-up one. `probability`:
    calibrated P(positive), empty for a model logged before calibration (as the service gives null)."""
    present = texts.notna()
    out = pd.DataFrame({"row_id": range(len(texts)), "review": texts.astype(object), "label": pd.NA,
                        "score": float("nan"), "probability": float("nan")})
    if present.any():
        labels, scores, probabilities = predict_with_scores(model, texts[present].tolist(), calibration)
        out.loc[present.to_numpy(), "label"] = [LABEL_NAMES[int(p)] for p in labels]
        out.loc[present.to_numpy(), "score"] = scores.round(4)
        if probabilities is not None:
            out.loc[present.to_numpy(), "probability"] = probabilities.round(4)
    return out


@io_step(name="write predictions")
def write_predictions(predictions: pd.DataFrame, path: str) -> None:
    """Write to a temporary file beside the target, then rename: never a half-written CSV."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".partial")
    os.close(fd)
    try:
        predictions.to_csv(tmp, index=False)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


@io_step(name="log counts to MLflow")
def log_counts(predictions: pd.DataFrame, model_uri: str, version: str, input_path: str) -> None:
    mlflow.set_experiment(SCORING_EXPERIMENT)
    with mlflow.start_run(run_name=f"score-{flow_run.get_name() or 'local'}"):
        mlflow.set_tags({"prefect.flow_run_id": str(flow_run.get_id()), "model_uri": model_uri,
                         "model_version": version, "input": input_path})
        counts = predictions["label"].value_counts()
        mlflow.log_metrics({"rows": len(predictions), "positive": int(counts.get("positive", 0)),
                            "negative": int(counts.get("negative", 0)),
                            "no_text": int(predictions["label"].isna().sum())})


@dataclass(frozen=True)
class ScoredFile:
    """What a scoring run wrote: one row per input row, labelled where the row had text."""
    rows: int
    labelled: int

    def __str__(self) -> str:
        blank = self.rows - self.labelled
        return f"{self.labelled} of {self.rows} rows" + (f" ({blank} without text, left unlabelled)" if blank else "")


@flow(name="score_reviews", log_prints=True)
def score_reviews(input_path: str, output_path: str, text_col: str = DEFAULT_TEXT_COL,
                  model_uri: str = DEFAULT_MODEL_URI) -> ScoredFile:
    data_errors_in_one_line()
    check_paths(input_path, output_path)
    texts = read_reviews(input_path, text_col)
    model, calibration, version = load_model(model_uri)
    predictions = score(model, texts, calibration)
    write_predictions(predictions, output_path)
    log_counts(predictions, model_uri, version, input_path)
    scored = ScoredFile(rows=len(predictions), labelled=int(predictions["label"].notna().sum()))
    get_run_logger().info("scored %s with %s (v%s) into %s", scored, model_uri, version, output_path)
    return scored
