"""The monitoring flow: the service's prediction log since the last check, per served version, against
that version's reference profile; one MLflow run per check; a retrain on the original data plus the
fed-back reviews when the check finds drift or degradation, unless one was triggered recently.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from review_sentiment.constants import (
    DEFAULT_PREDICTION_LOG,
    DEFAULT_RATING_COL,
    DEFAULT_TEXT_COL,
    MONITORING_EXPERIMENT,
    SAMPLE_DATA,
)
from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.monitoring.drift import DEGRADED, DRIFT, Check, Finding, Window, check
from review_sentiment.monitoring.logged import read_log
from review_sentiment.monitoring.profile import PROFILE_ARTIFACT
from review_sentiment.monitoring.report import html_report, overall, summary
from review_sentiment.orchestration.retrain import retrain_logistic
from review_sentiment.orchestration.task_policies import cpu_step, data_errors_in_one_line, io_step

FLOW_NAME = "flipkart-sentiment-monitoring"
COOLDOWN_HOURS = 6.0


@dataclass(frozen=True)
class MonitorOutcome:
    status: str
    run_id: str
    versions: dict[str, str]  # "v3" → its status
    retrain: str  # what was done about the status, in words


@io_step(name="read new predictions")
def read_window(prediction_log: str, since: str | None) -> pd.DataFrame:
    try:
        return read_log(Path(prediction_log), since)
    except (FileNotFoundError, ValueError) as err:
        raise ReviewDataError(str(err)) from None


@io_step(name="load reference")
def reference_of(name: str, version: str) -> tuple[dict | None, float | None]:
    """The version's reference profile (None for versions logged before profiles) and test F1."""
    registered = mlflow.MlflowClient().get_model_version(name, version)
    try:
        profile = mlflow.artifacts.load_dict(f"runs:/{registered.run_id}/{PROFILE_ARTIFACT}")
    except (MlflowException, OSError):
        profile = None
    test_f1 = registered.tags.get("test_f1")
    return profile, None if test_f1 is None else float(test_f1)


@cpu_step(name="check for drift")
def check_version(rows: pd.DataFrame, profile: dict | None, test_f1: float | None, seed: int) -> tuple[Window, Check]:
    window = Window(rows["review"].tolist(), rows["label"].to_numpy(), rows["score"].to_numpy(float),
                    rows["true_label"].to_numpy(float))
    return window, check(window, profile, test_f1, seed)


def last_check() -> pd.Series | None:
    runs = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], order_by=["start_time DESC"], max_results=1)
    return None if runs.empty else runs.iloc[0]


def last_triggered_retrain(cooldown_hours: float) -> str | None:
    """The start of a retrain a check triggered within the cool-down, if any (ISO time)."""
    since = int((time.time() - cooldown_hours * 3600) * 1000)
    runs = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], max_results=1, order_by=["start_time DESC"],
                              filter_string=f"tags.retrain_triggered = 'yes' and attributes.start_time > {since}")
    return None if runs.empty else runs.iloc[0]["start_time"].isoformat(timespec="seconds")


def metrics_of(findings: list[Finding]) -> dict[str, float]:
    """Per measure its current value and test statistic, so `mlflow ui` charts them over checks."""
    out = {}
    for f in findings:
        key = f"{f.kind}/{re.sub(r'[^a-z0-9]+', '_', f.measure.lower()).strip('_')}"
        out |= {key: f.current, f"{key}/statistic": f.statistic}
    return out


@flow(name=FLOW_NAME, log_prints=True)
def monitor_predictions(
    prediction_log: str = str(DEFAULT_PREDICTION_LOG),
    data_path: str = str(SAMPLE_DATA),
    text_col: str = DEFAULT_TEXT_COL,
    rating_col: str = DEFAULT_RATING_COL,
    retrain: bool = True,
    cooldown_hours: float = COOLDOWN_HOURS,
    seed: int = 0,
) -> MonitorOutcome:
    """One check of everything logged since the last one; on drift or degradation (and `retrain`),
    retrain on `data_path` plus the fed-back reviews, at most once per `cooldown_hours`."""
    data_errors_in_one_line()
    logger = get_run_logger()
    mlflow.set_experiment(MONITORING_EXPERIMENT)
    previous = last_check()
    since = None if previous is None else previous.get("tags.window_end") or None
    frame = read_window(prediction_log, since)
    checks, profiles, windows = {}, {}, {}
    for (name, version), rows in frame.groupby(["model_name", "model_version"], sort=True):
        label = f"v{version}"
        profiles[label], test_f1 = reference_of(name, version)
        windows[label], checks[label] = check_version(rows, profiles[label], test_f1, seed)
    status = overall([c.status for c in checks.values()])
    busiest = max(checks, key=lambda v: checks[v].predictions, default=None)
    window_end = frame["time"].max() if len(frame) else since
    with mlflow.start_run(run_name=f"check-{flow_run.get_name() or 'local'}") as run:
        mlflow.set_tags({"status": status, "window_start": since or "", "window_end": window_end or "",
                         "prediction_log": prediction_log, "prefect.flow_run_id": str(flow_run.get_id()),
                         **{f"status.{v}": c.status for v, c in checks.items()}})
        mlflow.log_metrics({"predictions": len(frame), "feedback": int(frame["true_label"].notna().sum())}
                           | (metrics_of(checks[busiest].findings) if busiest else {}))
        title = f"Monitoring check {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {status}"
        mlflow.log_text(html_report(title, checks, profiles, windows), "report.html")
        print(f"{title} — {len(frame)} predictions since {since or 'the start of the log'}\n{summary(checks)}")
    action = "nothing to do"  # decided after the check's run is closed: a retrain starts runs of its own
    if status in (DRIFT, DEGRADED):
        action = _act(status, retrain, cooldown_hours, prediction_log, data_path, text_col, rating_col,
                      run.info.run_id)
    mlflow.MlflowClient().set_tag(run.info.run_id, "retrain", action)
    print(f"Retrain: {action}")
    logger.info("Check %s: %s; %s", run.info.run_id, status, action)
    return MonitorOutcome(status, run.info.run_id, {v: c.status for v, c in checks.items()}, action)


def _act(status: str, retrain: bool, cooldown_hours: float, prediction_log: str, data_path: str, text_col: str,
         rating_col: str, check_run: str) -> str:
    """Retrain on the file plus the feedback, unless told not to or still cooling down."""
    if not retrain:
        return f"{status}: retraining is off for this check"
    if cooled := last_triggered_retrain(cooldown_hours):
        return f"{status}: cooling down, a check triggered a retrain at {cooled} (cool-down {cooldown_hours:g} h)"
    mlflow.MlflowClient().set_tag(check_run, "retrain_triggered", "yes")
    outcome = retrain_logistic(data_path=data_path, text_col=text_col, rating_col=rating_col,
                               feedback_log=prediction_log, triggered_by=check_run)
    return f"{status}: triggered a retrain on {data_path} + feedback: {outcome.status}, {outcome.message}"
