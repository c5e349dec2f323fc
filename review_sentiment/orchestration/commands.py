"""What `ml_orchestration_flipkart.py` runs: one retrain or check now, both on schedules, batch scoring.

Importing this module imports Prefect, which reads its settings then: apply
`local_prefect.quiet_prefect_env` to the environment first.
"""
from __future__ import annotations

import contextlib
import io
import signal
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

from prefect import Flow, serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.process import ProcessWorker

from review_sentiment.constants import PROJECT_DIR, QUIET_MLFLOW_ENV
from review_sentiment.data.reviews import ReviewDataError, load_reviews
from review_sentiment.monitoring.logged import require_log
from review_sentiment.orchestration.batch_scoring import check_paths, score_reviews
from review_sentiment.orchestration.local_prefect import prefect_api
from review_sentiment.orchestration.monitor import monitor_predictions
from review_sentiment.orchestration.retrain import choose_lineage, retrain_logistic

DEPLOYMENT = "flipkart-sentiment-logistic-deployment"
MONITOR_DEPLOYMENT = "flipkart-sentiment-monitoring-deployment"
PATH_PARAMETERS = ("data_path", "prediction_log", "feedback_log")
POOL_SUFFIX = "-pool"  # a pool deployment may not share the served one's name: serving would take it over
NEVER_OVERLAP = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def check_data(parameters: Mapping[str, Any]) -> None:
    """Read the reviews a retrain would train on, before a Prefect API starts: a bad file then fails in
    the caller's one line (inside a flow run, Prefect logs its own ERROR lines first). A scheduled run
    reads the file again, as it may have changed since."""
    lineage, _ = choose_lineage.fn(*(parameters.get(name) for name in ("data_path", "text_col", "rating_col",
                                                                       "test_size", "seed")))
    load_reviews(lineage.data, lineage.text_col, lineage.rating_col)


def retrain_once(parameters: dict[str, Any]) -> None:
    """One retrain in the foreground; a data error propagates as ReviewDataError."""
    check_data(parameters)
    outcome = retrain_logistic(**parameters)
    print(f"Retrain {outcome.status}: {outcome.message}")


def monitor_once(parameters: dict[str, Any]) -> None:
    """One monitoring check in the foreground (and the retrain it may trigger); a missing SQLite log
    fails here, before a Prefect API is started or anything is written (a PostgreSQL one when read)."""
    try:
        require_log(str(parameters["prediction_log"]))
    except FileNotFoundError as err:
        raise ReviewDataError(str(err)) from None
    outcome = monitor_predictions(**parameters)
    versions = ", ".join(f"{version} {status}" for version, status in outcome.versions.items()) or "no predictions"
    print(f"Check {outcome.status} ({versions}; MLflow run {outcome.run_id}). Retrain: {outcome.retrain}")


def serve_schedules(retrain_cron: str, retrain: dict[str, str], monitor_cron: str, monitor: dict[str, str]) -> None:
    """Serve the retrain and the monitor until Ctrl-C or SIGTERM; one flow run at a time, and a
    deployment's runs never overlap (a new one is cancelled)."""
    check_data(retrain)
    previous = signal.signal(signal.SIGINT, _stop_like_sigterm)
    try:
        with prefect_api() as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
            print(f"Prefect dashboard: {api_url.removesuffix('/api')}  (MLflow: run `mlflow ui`)", flush=True)
            try:
                serve(
                    # Prefect's async_dispatch types these as "value or coroutine"; called from sync code: the value
                    retrain_logistic.to_deployment(name=DEPLOYMENT, cron=retrain_cron, parameters=retrain,  # type: ignore[arg-type]
                                                   concurrency_limit=NEVER_OVERLAP),
                    monitor_predictions.to_deployment(name=MONITOR_DEPLOYMENT, cron=monitor_cron,  # type: ignore[arg-type]
                                                      parameters=monitor, concurrency_limit=NEVER_OVERLAP),
                    limit=1,
                )
            except KeyboardInterrupt:  # Ctrl-C while the deployment was still being registered
                print("Stopped before serving began", flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def deploy_to_pool(pool: str, retrain_cron: str, retrain: dict[str, str], monitor_cron: str,
                   monitor: dict[str, str]) -> None:
    """Deploy the retrain and the monitor on their schedules to a process work pool (made if missing)
    of the Prefect server PREFECT_API_URL names, and return: a `prefect worker` started on any machine
    with this project at the same path runs them. Paths in the parameters are made absolute, since
    the worker runs flows in the project folder."""
    if not PREFECT_API_URL.value():
        raise ReviewDataError("a work pool lives on a Prefect server: set PREFECT_API_URL (e.g. `python stack.py up`, "
                              "then export what it prints)")
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
    for flow, name, cron, parameters in ((retrain_logistic, DEPLOYMENT, retrain_cron, retrain),
                                         (monitor_predictions, MONITOR_DEPLOYMENT, monitor_cron, monitor)):
        with contextlib.redirect_stdout(io.StringIO()):  # Prefect's own table, cut to the terminal's width
            _from_project(flow).deploy(name=name + POOL_SUFFIX, work_pool_name=pool, cron=cron,
                                       parameters={k: _absolute(k, v) for k, v in parameters.items()},
                                       # a worker started by hand lacks what the entry scripts set
                                       job_variables={"env": QUIET_MLFLOW_ENV}, concurrency_limit=NEVER_OVERLAP,
                                       print_next_steps=False, ignore_warnings=True)
        print(f"Deployed {flow.name}/{name + POOL_SUFFIX} to work pool {pool!r}, cron {cron!r} (UTC)", flush=True)
    print(f"Start a worker where it should run (same environment): prefect worker start --pool {pool}", flush=True)


def _from_project(flow: Flow) -> Flow:
    """The flow as a worker loads it: from its file in this project folder (no image, nothing pushed)."""
    entrypoint = Path(flow.fn.__code__.co_filename).relative_to(PROJECT_DIR)
    # Prefect's async_dispatch types this as "value or coroutine"; called from sync code it is the value
    return flow.from_source(source=str(PROJECT_DIR), entrypoint=f"{entrypoint}:{flow.fn.__name__}")  # type: ignore[return-value]


def _absolute(name: str, value: object) -> object:
    """A path parameter, made absolute (a database URL stays as it is)."""
    if name in PATH_PARAMETERS and isinstance(value, str) and "://" not in value:
        return str(Path(value).resolve())
    return value


def _stop_like_sigterm(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C takes the serving runner's SIGTERM path. Left to asyncio, Ctrl-C cancels the runner's
    main task, and a cancel that lands about a second after a run finished was swallowed: the serve
    kept running (2 times of 2, tests/e2e/test_schedule.py caught it), while SIGTERM stopped it
    cleanly each time (4 of 4). Before the runner is up there is no such handler: stop as usual."""
    on_sigterm = signal.getsignal(signal.SIGTERM)
    if not callable(on_sigterm):
        raise KeyboardInterrupt
    on_sigterm(signum, frame)


def score_file(input_path: str, output_path: str, text_col: str) -> None:
    """Label a CSV of reviews with the champion into `output_path` (written whole or not at all). Path
    mistakes fail here, before a Prefect API is started for the flow (which checks them again)."""
    check_paths(input_path, output_path)
    print(f"Scored {score_reviews(input_path, output_path, text_col)} into {output_path}")
