"""The monitoring flow: the service's prediction log since the last check, per served version, against
that version's reference profile; one MLflow run per check; a retrain on the original data plus the
fed-back reviews when the check finds drift or degradation, unless one was triggered recently.
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run

from review_sentiment.constants import (
    DEFAULT_PREDICTION_LOG,
    MODEL_NAME,
    MONITORING_EXPERIMENT,
    MONITORING_FLOW,
    MONITORING_STATUS_TAG,
)
from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.databases import without_password
from review_sentiment.monitoring.drift import (
    DEGRADED,
    DRIFT,
    ESTIMATE_TOLERANCE,
    ESTIMATED_DROP,
    INSUFFICIENT,
    SUSPECT,
    Check,
    Window,
    check,
)
from review_sentiment.monitoring.logged import (
    FEEDBACK_COLUMNS,
    PREDICTION_COLUMNS,
    Cursor,
    NewRows,
    log_identity,
    read_new,
    trusted,
)
from review_sentiment.monitoring.profile import PROFILE_ARTIFACT, ReferenceProfile, UnusableProfile
from review_sentiment.monitoring.report import F1_HISTORY, html_report, overall, summary
from review_sentiment.orchestration.crashed_runs import mark_crashed_runs, record_process
from review_sentiment.orchestration.retrain import retrain_logistic
from review_sentiment.orchestration.task_policies import cpu_step, data_errors_in_one_line, io_step
from review_sentiment.tracking.promotion import decide_pending
from review_sentiment.tracking.records import VersionRecord

COOLDOWN_HOURS = 6.0
RETRAIN_PENDING = "pending: triggered a retrain, not finished"  # what a check killed during its retrain leaves
Reference = ReferenceProfile | UnusableProfile | None  # what a check compares with, or why it cannot


@dataclass(frozen=True)
class MonitorOutcome:
    status: str
    run_id: str
    versions: dict[str, str]  # "v3" → its status
    retrain: str  # what was done about the status, in words


@io_step(name="identify the log")
def identity_of(prediction_log: str) -> str | None:
    """The identity stored in the log (checks are keyed by it); None while there is no log yet, or for a
    log the service has not migrated to schema 3."""
    try:
        return log_identity(prediction_log)
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise ReviewDataError(str(err)) from None


@io_step(name="read new predictions")
def read_window(prediction_log: str, after: Cursor) -> NewRows:
    """Predictions and feedback logged past the last check's cursor; none while there is no log yet."""
    try:
        return read_new(prediction_log, after)
    except FileNotFoundError:
        return NewRows(pd.DataFrame(columns=PREDICTION_COLUMNS), pd.DataFrame(columns=FEEDBACK_COLUMNS), after, None)
    except ValueError as err:
        raise ReviewDataError(str(err)) from None


@io_step(name="load reference")
def reference_of(name: str, version: str) -> tuple[Reference, float | None]:
    """The version's reference profile (UnusableProfile: why it cannot be used) and test F1; (None,
    None) for a version logged before profiles, or one deleted from the registry since it served."""
    try:
        registered = mlflow.MlflowClient().get_model_version(name, version)
    except MlflowException:
        return None, None
    test_f1 = VersionRecord.of(registered).test_f1
    try:
        raw = mlflow.artifacts.load_dict(f"runs:/{registered.run_id}/{PROFILE_ARTIFACT}")
    except (MlflowException, OSError, ValueError):  # none, or not JSON: the check says it has no profile
        return None, test_f1
    try:
        return ReferenceProfile.from_dict(raw), test_f1
    except UnusableProfile as unusable:
        return unusable, test_f1


@cpu_step(name="check for drift")
def check_version(rows: pd.DataFrame, fed: pd.DataFrame, profile: Reference, test_f1: float | None,
                  seed: int, trust_anonymous: bool) -> tuple[Window, Check]:
    kept = trusted(fed["giver"], trust_anonymous).to_numpy(bool)
    window = Window(rows["review"].tolist(), rows["label"].to_numpy(int), rows["score"].to_numpy(float),
                    rows["probability"].to_numpy(float, na_value=np.nan), fed["true_label"].to_numpy(int)[kept],
                    fed["label"].to_numpy(int)[kept], fed["probability"].to_numpy(float, na_value=np.nan)[kept],
                    int((~kept).sum()))
    return window, check(window, profile, test_f1, seed)


def last_check(prediction_log: str, identity: str | None) -> pd.Series | None:
    """The last finished check of this log (None if none). The log is named by the identity stored in
    it, whatever path or URL names it today; checks from before identities (and of a log the service
    has not migrated yet) by the path or URL as typed, unless that check names another log (a new log
    at an old path starts anew)."""
    run = _last_check_where("log_id", identity) if identity else None
    if run is None and (run := _last_check_where("prediction_log", without_password(prediction_log))) is not None \
            and _tag(run, "log_id") is not None:
        run = None
    return run


def cursor_of(run: pd.Series | None) -> Cursor:
    """Where a check stopped reading its log (the start for none)."""
    if run is None:
        return Cursor()
    return Cursor(int(run["tags.last_prediction_row"]), int(run["tags.last_feedback_row"]),
                  int(_tag(run, "last_xid") or 0))  # none: a check from before PostgreSQL's xid cursor


def left_trigger(run: pd.Series | None) -> str | None:
    """The status of the check `run` if it triggered a retrain and its process died before the retrain
    finished (its flow run is over, Crashed by `mark_crashed_runs`, yet the trigger is still pending):
    that retrain is this check's to do. None otherwise, or while that check still runs (another host)."""
    if run is None or _tag(run, "retrain") != RETRAIN_PENDING:
        return None
    with get_client(sync_client=True) as client:
        try:
            state = client.read_flow_run(UUID(run["tags.prefect.flow_run_id"])).state
            assert state is not None  # Prefect gives every flow run a state when it creates it
            if not state.is_final():
                return None
        except ObjectNotFound:  # another Prefect server, or its runs deleted since: over
            pass
    return _tag(run, "retrain_for") or run["tags.status"]  # a check from before `retrain_for`: its status


def _last_check_where(tag: str, value: str) -> pd.Series | None:
    runs = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], max_results=1, order_by=["start_time DESC"],
                              filter_string=f"tags.{tag} = '{value}' and attributes.status = 'FINISHED'")
    return None if runs.empty else runs.iloc[0]


def _tag(run: pd.Series, name: str) -> str | None:
    value = run.get(f"tags.{name}")
    return None if value is None or pd.isna(value) else value


def last_triggered_retrain(cooldown_hours: float) -> str | None:
    """The start of a retrain a check triggered within the cool-down, if any (ISO time)."""
    since = int((time.time() - cooldown_hours * 3600) * 1000)
    runs = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], max_results=1, order_by=["start_time DESC"],
                              filter_string=f"tags.retrain_triggered = 'yes' and attributes.start_time > {since}")
    return None if runs.empty else runs.iloc[0]["start_time"].isoformat(timespec="seconds")


def metrics_of(result: Check) -> dict[str, float]:
    """Per measure its current value and test statistic, so `mlflow ui` charts them over checks; the
    label-free estimate with its interval, and beside the F1 on trusted feedback the estimate for the
    same rows (how far the estimate is from the truth, once the truth comes)."""
    out: dict[str, float] = {}
    for f in result.findings:
        if f.kind == "performance":  # logged once, by the names below
            continue
        key = f"{f.kind}/{re.sub(r'[^a-z0-9]+', '_', f.measure.lower()).strip('_')}"
        out |= {key: f.current, f"{key}/statistic": f.statistic}
    if (e := result.estimate) is not None:
        out |= {"performance/estimated_f1": e.f1, "performance/estimated_f1_low": e.low,
                "performance/estimated_f1_high": e.high}
    if result.realized is not None:
        out["performance/realized_f1"] = result.realized[0]
        if (same_rows := result.realized[1]) is not None:
            out["performance/estimated_f1_on_feedback_rows"] = same_rows.f1
    return out


def f1_history(log_id: str | None, prediction_log: str) -> pd.DataFrame:
    """Estimated and realized macro-F1 of the last 1,000 checks of this log (the active one included),
    oldest first."""
    where = f"tags.log_id = '{log_id}'" if log_id else f"tags.prediction_log = '{without_password(prediction_log)}'"
    runs = mlflow.search_runs(experiment_names=[MONITORING_EXPERIMENT], order_by=["start_time DESC"],
                              max_results=1000, filter_string=where).iloc[::-1]
    history = pd.DataFrame({"time": runs["start_time"] if len(runs) else []})
    for name in F1_HISTORY:
        column = f"metrics.performance/{name}"
        history[name] = runs.get(column, np.nan)
    return history


@flow(name=MONITORING_FLOW, log_prints=True)
def monitor_predictions(
    prediction_log: str = str(DEFAULT_PREDICTION_LOG),
    data_path: str | None = None,
    text_col: str | None = None,
    rating_col: str | None = None,
    retrain: bool = True,
    cooldown_hours: float = COOLDOWN_HOURS,
    seed: int = 0,
    trust_anonymous_feedback: bool = False,
    allow_new_data: bool = False,
    unlocked_promotion: bool = False,
) -> MonitorOutcome:
    """One check of everything logged since the last one; on drift or degradation (and `retrain`),
    retrain the champion's lineage (or `data_path`) plus the trusted fed-back reviews, at most once per
    `cooldown_hours`. Feedback that disagrees sharply with the protected set is reported, not acted on."""
    data_errors_in_one_line()
    logger = get_run_logger()
    record_process()
    pending = decide_pending(MODEL_NAME, unlocked=unlocked_promotion) if retrain else []  # --no-retrain: report only
    for line in mark_crashed_runs() + pending:
        logger.warning(line)
    mlflow.set_experiment(MONITORING_EXPERIMENT)
    identity = identity_of(prediction_log)
    previous = last_check(prediction_log, identity)
    after, left = cursor_of(previous), left_trigger(previous)
    new = read_window(prediction_log, after)
    if identity is not None and new.log_id != identity:  # replaced between the two reads: not this cursor's log
        raise ReviewDataError(f"{without_password(prediction_log)}: another log since this check began; check again")
    frame, feedback = new.predictions, new.feedback
    checks, profiles, windows = {}, {}, {}
    served = pd.concat([frame, feedback])[["model_name", "model_version"]].drop_duplicates()
    for name, version in sorted(served.itertuples(index=False, name=None)):
        label = f"v{version}"
        rows = frame[(frame["model_name"] == name) & (frame["model_version"] == version)]
        fed = feedback[(feedback["model_name"] == name) & (feedback["model_version"] == version)]
        profiles[label], test_f1 = reference_of(name, version)
        windows[label], checks[label] = check_version(rows, fed, profiles[label], test_f1, seed,
                                                      trust_anonymous_feedback)
        _show_status(name, version, checks[label].status)
    status = overall([c.status for c in checks.values()])
    busiest = max(checks, key=lambda v: checks[v].predictions, default=None)
    # Too little to judge: the next check reads these rows again, with more.
    until = after if status == INSUFFICIENT else new.cursor
    trigger = status if status in (DRIFT, DEGRADED) else left  # a check's own, else the one a killed check left
    with mlflow.start_run(run_name=f"check-{flow_run.get_name() or 'local'}") as run:
        mlflow.set_tags({"status": status, "prediction_log": without_password(prediction_log),
                         **({"log_id": new.log_id} if new.log_id else {}),  # migrated since: by its id now
                         "prefect.flow_run_id": str(flow_run.get_id()),
                         **{f"status.{v}": c.status for v, c in checks.items()}})
        mlflow.log_metrics({"predictions": len(frame), "feedback": len(feedback),
                            "feedback_trusted": sum(len(w.feedback_truth) for w in windows.values())}
                           | (metrics_of(checks[busiest]) if busiest else {}))
        title = f"Monitoring check {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {status}"
        history = f1_history(new.log_id, prediction_log)
        mlflow.log_text(html_report(title, checks, profiles, windows, history), "report.html")
        print(f"{title} — {_read(frame, feedback, after)}\n{summary(checks)}")
        if untrusted := sum(w.untrusted_feedback for w in windows.values()):
            print(f"Not trusted: {untrusted} fed-back label{'s' * (untrusted != 1)} given without an API key (kept "
                  f"and counted; --trust-anonymous-feedback lets them judge and train)")
        if left and previous is not None:  # a left trigger is a previous check's
            mlflow.set_tag("retrain_left_by", previous["run_id"])
        if trigger and status != SUSPECT and retrain and not last_triggered_retrain(cooldown_hours):
            # with the cursor: killed during the retrain, the next check does it, for the same reason
            mlflow.set_tags({"retrain": RETRAIN_PENDING, "retrain_for": trigger})
        mlflow.set_tags({"last_prediction_row": until.prediction_row, "last_feedback_row": until.feedback_row,
                         "last_xid": until.xid})  # last: the window is read
    action = "nothing to do"  # decided after the check's run is closed: a retrain starts runs of its own
    if status == SUSPECT:
        action = (f"{SUSPECT}: trusted feedback is far below the protected set's F1 on inputs that did not "
                  f"move; not retraining on it (see who gave it: the log's feedback.giver and client)")
    elif trigger:
        try:
            action = _act(trigger, retrain, cooldown_hours, prediction_log, run.info.run_id, dict(
                data_path=data_path, text_col=text_col, rating_col=rating_col,
                trust_anonymous_feedback=trust_anonymous_feedback, allow_new_data=allow_new_data,
                unlocked_promotion=unlocked_promotion))
        except Exception as err:  # failed, not killed: reported, not left pending to the next check
            mlflow.MlflowClient().set_tag(run.info.run_id, "retrain", f"{trigger}: the retrain failed: {err}")
            raise
        if left and previous is not None:
            action = f"{action} (left by check {previous['run_id']}, killed during its retrain)"
    elif status == ESTIMATED_DROP:
        action = (f"{ESTIMATED_DROP}: macro-F1 estimated without labels is below the version's test F1 "
                  f"(minus {ESTIMATE_TOLERANCE}) on inputs that did not drift; reported, not acted on by itself "
                  f"(trusted feedback will confirm or clear it)")
    mlflow.MlflowClient().set_tag(run.info.run_id, "retrain", action)
    print(f"Retrain: {action}")
    logger.info("Check %s: %s; %s", run.info.run_id, status, action)
    return MonitorOutcome(status, run.info.run_id, {v: c.status for v, c in checks.items()}, action)


def _read(frame: pd.DataFrame, feedback: pd.DataFrame, after: Cursor) -> str:
    """What this check read, in words (a first check reads the log from its start)."""
    since = "since the last check" if after != Cursor() else "in the log"
    return (f"{len(frame)} prediction{'s' * (len(frame) != 1)} and {len(feedback)} fed-back "
            f"label{'s' * (len(feedback) != 1)} {since}")


def _show_status(name: str, version: str, status: str) -> None:
    """The version's latest check, on the version itself: the service exports it on /metrics."""
    with contextlib.suppress(MlflowException):  # deleted from the registry since it served
        mlflow.MlflowClient().set_model_version_tag(name, version, MONITORING_STATUS_TAG, status)


def _act(status: str, retrain: bool, cooldown_hours: float, prediction_log: str, check_run: str,
         lineage: dict[str, Any]) -> str:
    """Retrain the lineage plus the trusted feedback, unless told not to or still cooling down."""
    if not retrain:
        return f"{status}: retraining is off for this check"
    if cooled := last_triggered_retrain(cooldown_hours):
        return f"{status}: cooling down, a check triggered a retrain at {cooled} (cool-down {cooldown_hours:g} h)"
    outcome = retrain_logistic(feedback_log=prediction_log, triggered_by=check_run, **lineage)
    mlflow.MlflowClient().set_tag(check_run, "retrain_triggered", "yes")  # a retrain that failed does not count
    data = lineage["data_path"] or "the champion's data"
    return f"{status}: triggered a retrain on {data} + trusted feedback: {outcome.status}, {outcome.message}"
