"""What `ml_orchestration_flipkart.py` runs: one retrain or check now, both on schedules, batch scoring.

Importing this module imports Prefect, which reads its settings then: apply
`local_prefect.quiet_prefect_env` to the environment first.
"""
from __future__ import annotations

import signal
from types import FrameType

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.settings import PREFECT_API_URL, temporary_settings

from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.monitoring.logged import require_log
from review_sentiment.orchestration.batch_scoring import check_paths, score_reviews
from review_sentiment.orchestration.local_prefect import prefect_api
from review_sentiment.orchestration.monitor import monitor_predictions
from review_sentiment.orchestration.retrain import retrain_logistic
from review_sentiment.tracking.model_logging import quiet_mlflow_warnings

DEPLOYMENT = "flipkart-sentiment-logistic-deployment"
MONITOR_DEPLOYMENT = "flipkart-sentiment-monitoring-deployment"
NEVER_OVERLAP = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


def retrain_once(parameters: dict[str, str]) -> None:
    """One retrain in the foreground; a data error propagates as ReviewDataError."""
    quiet_mlflow_warnings()
    outcome = retrain_logistic(**parameters)
    print(f"Retrain {outcome.status}: {outcome.message}")


def monitor_once(parameters: dict[str, object]) -> None:
    """One monitoring check in the foreground (and the retrain it may trigger); a missing log fails
    here, before a Prefect API is started or anything is written."""
    try:
        require_log(str(parameters["prediction_log"]))
    except FileNotFoundError as err:
        raise ReviewDataError(str(err)) from None
    quiet_mlflow_warnings()
    outcome = monitor_predictions(**parameters)
    versions = ", ".join(f"{version} {status}" for version, status in outcome.versions.items()) or "no predictions"
    print(f"Check {outcome.status} ({versions}; MLflow run {outcome.run_id}). Retrain: {outcome.retrain}")


def serve_schedules(retrain_cron: str, retrain: dict[str, str], monitor_cron: str, monitor: dict[str, str]) -> None:
    """Serve the retrain and the monitor until Ctrl-C or SIGTERM; one flow run at a time, and a
    deployment's runs never overlap (a new one is cancelled)."""
    quiet_mlflow_warnings()
    previous = signal.signal(signal.SIGINT, _stop_like_sigterm)
    try:
        with prefect_api() as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
            print(f"Prefect dashboard: {api_url.removesuffix('/api')}  (MLflow: run `mlflow ui`)", flush=True)
            try:
                serve(
                    retrain_logistic.to_deployment(name=DEPLOYMENT, cron=retrain_cron, parameters=retrain,
                                                   concurrency_limit=NEVER_OVERLAP),
                    monitor_predictions.to_deployment(name=MONITOR_DEPLOYMENT, cron=monitor_cron,
                                                      parameters=monitor, concurrency_limit=NEVER_OVERLAP),
                    limit=1,
                )
            except KeyboardInterrupt:  # Ctrl-C while the deployment was still being registered
                print("Stopped before serving began", flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)


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
    quiet_mlflow_warnings()
    rows = score_reviews(input_path, output_path, text_col)
    print(f"Scored {rows} reviews into {output_path}")
