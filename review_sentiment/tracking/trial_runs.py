"""Each finished Optuna trial becomes a child run of its family's parent run, written by whichever
worker ran it, on whatever machine: only the parent run's id is needed, not an active run.

The child run is written once the trial has finished, whole: it carries what optuna-integration's
MLflowCallback logged (params, the metric, the trial's tags and user attributes, which name the worker that
ran it). A tuning command's process and the workers it forks send their child runs to a writer process
(`trial_writer`): the next trial does not wait for them. A worker killed between finishing a trial and
logging it (or a writer that died) leaves a gap, which `log_missing_trial_runs` fills once every family's
trials are done.

How a child run is written depends on the store (`write_trial_runs`):
- an SQL store (SQLite, PostgreSQL): the rows MLflow's own `create_run`, `log_batch` and `set_terminated`
  would leave, inserted in one transaction with MLflow's own table models, for a batch of child runs at a
  time. MLflow has no call that makes a finished run, nor several runs at once: its three calls cost ~36 SQL
  statements a child run (this way, 13), reading back the run, its experiment and its inputs at each (9.9 ms
  a child run on SQLite; one transaction, 4.2 ms, and 2.0 ms in batches of 4, measured). That CPU is the
  writer's, which with two workers shares their two cores. A writer killed mid-write leaves nothing half-written. This
  mirrors MLflow 3.17's SQL store: `test_pinned_*` in tests/code/test_trial_runs.py must pass before the pin
  moves;
- a tracking server whose own database the environment names (`REVIEW_SENTIMENT_TRACKING_DB`; `stack.py
  env` exports the stack's): inserted into that database as above (`ChildRunStore`). Through the server a
  child run costs the machine ~35 ms of CPU (the server's, PostgreSQL's and the client's; ~45 ms is a
  trial's own on 8,500 reviews), inserted ~7 ms, ~2.3 ms in batches of 4 (measured on the stack);
- any other store (a tracking server): MLflow's three calls, per child run (create it with every tag, one
  batch of the params and the metric, terminate it). A worker killed within them leaves a RUNNING run,
  which the run replaces once the study is complete.
"""
from __future__ import annotations

import datetime
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlflow
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_USER
from mlflow.utils.uri import is_http_uri
from optuna.trial import FrozenTrial, TrialState

from review_sentiment.constants import TRACKING_DB_ENV
from review_sentiment.databases import is_postgres, sqlalchemy_url, sqlite_file

if TYPE_CHECKING:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

METRIC = "cv_f1_macro"
PARTIAL_METRIC = "partial_cv_f1"  # a pruned trial's mean over the folds it got through: not a CV F1
_SQL_STORE = "mlflow.store.tracking.sqlalchemy_store"  # ~0.45 s to import: only a client of that store needs it


@dataclass(frozen=True)
class ChildRun:
    """A finished trial as its child run: what either way of writing it writes."""

    experiment_id: str
    tags: dict[str, str]
    params: list[Param]
    metrics: list[Metric]
    start_time: int  # ms since the epoch, as MLflow keeps them
    end_time: int
    status: str  # FINISHED, or FAILED


def child_run(experiment_id: str, parent_run_id: str, trial: FrozenTrial, direction: str) -> ChildRun:
    assert trial.datetime_start is not None and trial.datetime_complete is not None  # a finished trial
    started, ended = (int(t.timestamp() * 1000) for t in (trial.datetime_start, trial.datetime_complete))
    # named as the console numbers trials (from 1); the `number` tag keeps Optuna's (from 0)
    tags = {MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: str(trial.number + 1), "number": str(trial.number),
            "state": trial.state.name, "direction": direction,
            "datetime_start": str(trial.datetime_start), "datetime_complete": str(trial.datetime_complete),
            **{f"{name}_distribution": str(d) for name, d in trial.distributions.items()},
            **{name: str(value) for name, value in trial.user_attrs.items()}}
    metric = PARTIAL_METRIC if trial.state == TrialState.PRUNED else METRIC
    status = RunStatus.FAILED if trial.state == TrialState.FAIL else RunStatus.FINISHED
    return ChildRun(experiment_id, tags, [Param(k, str(v)) for k, v in trial.params.items()],
                    [Metric(metric, trial.value, ended, 0)] if trial.value is not None else [],
                    started, ended, RunStatus.to_string(status))


def log_trial_run(client: mlflow.MlflowClient, experiment_id: str, parent_run_id: str, trial: FrozenTrial,
                  direction: str) -> None:
    write_trial_runs(client, [child_run(experiment_id, parent_run_id, trial, direction)])


def write_trial_runs(client: mlflow.MlflowClient, runs: Sequence[ChildRun]) -> None:
    """Write the child runs: in one transaction on an SQL store, else one by one with MLflow's calls."""
    store = client._tracking_client.store  # MLflow gives no public handle on a client's store
    if (sql := sys.modules.get(_SQL_STORE)) is not None and isinstance(store, sql.SqlAlchemyStore):
        _inserted(store, runs)
    else:
        for run in runs:
            _logged(client, run)


class ChildRunStore:
    """Where a writer writes child runs: the tracking store; beside a tracking server whose own database
    `REVIEW_SENTIMENT_TRACKING_DB` names, straight into that database, one transaction a batch, as on an SQL
    store. Only where that database is at the installed MLflow's schema, whole, with its default experiment
    (MLflow's store would else make, migrate or add them: it is never changed but for child runs), and holds
    each child run's parent run in the same experiment (looked up once a parent). Else, and from a failed
    write on, the child runs go through the server, with one line said. The database's store is made as
    this is (~0.7 s of imports and connecting): a writer makes it before the first trial."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = mlflow.MlflowClient(tracking_uri)
        url = os.environ.get(TRACKING_DB_ENV, "") if is_http_uri(tracking_uri) else ""
        self._database, why_not = _server_database(url) if url else (None, "")
        self._why_not: str | None = why_not  # what the next write says; None once said
        self._parents: dict[str, bool] = {}  # parent run id: whether the database holds it

    def write(self, runs: Sequence[ChildRun]) -> None:
        try:
            held = self._database is not None and all([self._holds(run) for run in runs])  # each parent looked up
        except MlflowException as err:  # the database failed, not the lookup: nothing was written there
            held = self._lost(err)
        if held and self._database is not None:
            try:
                write_trial_runs(self._database, runs)
            except Exception as err:  # noqa: BLE001  maybe committed before it failed: not sent again here, the
                self._lost(err)  # run fills whatever is missing once its trials are done (`log_missing_trial_runs`)
            return
        if self._why_not:  # said at the first write: a command that fails before writing any is not told
            print(f"child runs go through the MLflow server: {self._why_not}", file=sys.stderr, flush=True)
            self._why_not = None
        write_trial_runs(self.client, runs)

    def _holds(self, run: ChildRun) -> bool:
        assert self._database is not None
        parent = run.tags[MLFLOW_PARENT_RUN_ID]
        if parent not in self._parents:
            try:
                self._parents[parent] = self._database.get_run(parent).info.experiment_id == run.experiment_id
            except MlflowException as err:
                if err.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                    raise
                self._parents[parent] = False  # another MLflow database than the server's
            if not self._parents[parent] and self._why_not == "":
                self._why_not = f"{TRACKING_DB_ENV} does not hold run {parent}: is it the server's own database?"
        return self._parents[parent]

    def _lost(self, err: Exception) -> bool:
        """Write through the server from now on (saying why, once): False."""
        self._database = None
        self._why_not = None
        print(f"child runs go through the MLflow server from now on: writing into {TRACKING_DB_ENV} failed "
              f"({_one_line(err)})", file=sys.stderr, flush=True)
        return False


def _server_database(url: str) -> tuple[mlflow.MlflowClient | None, str]:
    """A client of the database at `url`, its store made, where MLflow's store would change nothing in it
    (its tables all there, at this MLflow's schema, the default experiment in it); else why not. The URL is
    not repeated in what is said: a password in it could be written in ways no parser masks."""
    import sqlalchemy
    from mlflow.store.db.utils import _all_tables_exist, _get_latest_schema_revision, _get_schema_version

    if (file := sqlite_file(url)) is not None and not file.exists():
        return None, f"{TRACKING_DB_ENV} names a file that does not exist"
    try:
        # a connect timeout: a host that drops packets would else hold the writer (and the trials sent) for minutes
        engine = sqlalchemy.create_engine(sqlalchemy_url(url), poolclass=sqlalchemy.NullPool,
                                          connect_args={"connect_timeout": 5} if is_postgres(url) else {})
        try:
            if not sqlalchemy.inspect(engine).has_table("runs"):
                return None, f"{TRACKING_DB_ENV} has no MLflow tables"
            if not _all_tables_exist(engine) or _get_schema_version(engine) != _get_latest_schema_revision():
                return None, f"{TRACKING_DB_ENV} is not at the installed MLflow's schema (mlflow=={mlflow.__version__})"
            with engine.connect() as connection:
                if connection.execute(sqlalchemy.text("SELECT 1 FROM experiments WHERE experiment_id = 0")).first() \
                        is None:
                    return None, f"{TRACKING_DB_ENV} has no default experiment: a tracking server's database has"
        finally:
            engine.dispose()
        client = mlflow.MlflowClient(sqlalchemy_url(url))
        client._tracking_client.store  # noqa: B018  made now, not on the first trial's way
    except Exception as err:  # noqa: BLE001  no URL, unreachable, refused: the server is written to
        return None, f"{TRACKING_DB_ENV} cannot be used ({_one_line(err)})"
    return client, ""


def _one_line(err: Exception) -> str:
    """An error as the writer's one line says it: its kind and its message's first line (SQLAlchemy's go on
    with the statement and its parameters)."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"


def _logged(client: mlflow.MlflowClient, run: ChildRun) -> str:
    """The child run written with MLflow's three calls (what `_inserted` mirrors); its id."""
    run_id = client.create_run(run.experiment_id, start_time=run.start_time, tags=run.tags).info.run_id
    client.log_batch(run_id, metrics=run.metrics, params=run.params)
    client.set_terminated(run_id, run.status, end_time=run.end_time)
    return run_id


def _inserted(store: SqlAlchemyStore, runs: Sequence[ChildRun]) -> None:
    """The rows MLflow 3.17's `SqlAlchemyStore.create_run`, `log_batch` and `set_terminated` leave for each
    run, with their checks (an active experiment, valid params and metrics), in one transaction. (Where a
    process has an active logged model, `MlflowClient.log_batch` also links each metric to it: a trial's
    child run is not that model's, and is linked to none.)"""
    from mlflow.entities import LifecycleStage, SourceType
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.uri import append_to_uri_path
    from mlflow.utils.validation import _validate_batch_log_data

    experiments = {}
    for experiment_id in {run.experiment_id for run in runs}:  # before the transaction: each in a session
        experiments[experiment_id] = experiment = store.get_experiment(experiment_id)
        store._check_experiment_is_active(experiment)
    with store.ManagedSessionMaker(read_only=False) as session:  # committed as it closes
        for run in runs:
            metrics, params, _ = _validate_batch_log_data(run.metrics, run.params, [])
            run_id = uuid.uuid4().hex
            session.add(SqlRun(
                name=run.tags[MLFLOW_RUN_NAME], run_uuid=run_id, experiment_id=run.experiment_id,
                artifact_uri=append_to_uri_path(experiments[run.experiment_id].artifact_location, run_id,
                                                store.ARTIFACTS_FOLDER_NAME),
                source_type=SourceType.to_string(SourceType.UNKNOWN), source_name="", entry_point_name="",
                user_id=run.tags.get(MLFLOW_USER, "unknown"), status=run.status, start_time=run.start_time,
                end_time=run.end_time, deleted_time=None, source_version="", lifecycle_stage=LifecycleStage.ACTIVE))
            session.add_all([SqlTag(run_uuid=run_id, key=key, value=value) for key, value in run.tags.items()])
            session.add_all([SqlParam(run_uuid=run_id, key=param.key, value=param.value) for param in params])
            for metric in metrics:
                is_nan, value = store.sanitize_metric_value(metric.value)
                for table in (SqlMetric, SqlLatestMetric):  # a new run's latest value is its only one
                    session.add(table(run_uuid=run_id, key=metric.key, value=value, timestamp=metric.timestamp,
                                      step=metric.step, is_nan=is_nan))


def log_missing_trial_runs(client: mlflow.MlflowClient, experiment_id: str, parent_run_id: str,
                           trials: list[FrozenTrial], direction: str, settle_seconds: float = 5.0) -> int:
    """Log the finished trials that have no child run: a live worker logs its trial within moments of
    finishing it, so a trial still missing `settle_seconds` after it finished lost its worker. A child
    run its worker was killed while writing (still RUNNING after that long) is replaced."""
    by_number = {str(t.number): t for t in trials}

    def settled(trial: FrozenTrial | None) -> bool:
        if trial is None:
            return False
        assert trial.datetime_complete is not None  # `trials` are finished
        return (datetime.datetime.now() - trial.datetime_complete).total_seconds() > settle_seconds

    while True:
        children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                      max_results=50_000)
        cut_short = [child for child in children if child.info.status in ("RUNNING", "KILLED")  # KILLED: by
                     and settled(by_number.get(child.data.tags.get("number", "")))]  # the orphan check, as RUNNING
        logged = {child.data.tags.get("number") for child in children if child not in cut_short}
        missing = [t for t in trials if str(t.number) not in logged]
        if all(settled(t) for t in missing):
            for child in cut_short:
                client.delete_run(child.info.run_id)
            for trial in missing:  # one by one: one that cannot be written costs only itself and those after
                log_trial_run(client, experiment_id, parent_run_id, trial, direction)
            return len(missing)
        time.sleep(0.5)
