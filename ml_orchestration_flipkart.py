"""Scheduled retraining and batch scoring with Prefect, on top of the tuning script's core.

    python ml_orchestration_flipkart.py                  # serve the retrain every 5 minutes
    python ml_orchestration_flipkart.py --once           # one retrain now, exit with its status
    python ml_orchestration_flipkart.py score --input new.csv --output preds.csv

Without PREFECT_API_URL, serving starts a local Prefect server (127.0.0.1, state in .prefect/)
and stops it on Ctrl-C; with it, the given server is used.
"""
from __future__ import annotations

import argparse
import os
import sys

from prefect_server import quiet_prefect_env

os.environ.update(quiet_prefect_env(dict(os.environ)))  # before prefect reads its settings

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402

from prefect_server import prefect_api  # noqa: E402
from retrain_flow import retrain_logistic  # noqa: E402
from registry import quiet_mlflow_warnings  # noqa: E402
from review_data import DEFAULT_RATING_COL, DEFAULT_TEXT_COL, SAMPLE_DATA, ReviewDataError  # noqa: E402
from score_flow import score_reviews  # noqa: E402

DEPLOYMENT = "flipkart-sentiment-logistic-deployment"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(SAMPLE_DATA), help="review CSV to retrain on")
    parser.add_argument("--text-col", default=DEFAULT_TEXT_COL)
    parser.add_argument("--rating-col", default=DEFAULT_RATING_COL)
    parser.add_argument("--cron", default="*/5 * * * *", help="retrain schedule (UTC)")
    parser.add_argument("--once", action="store_true", help="run one retrain in the foreground and exit")
    commands = parser.add_subparsers(dest="command")
    score = commands.add_parser("score", help="label a CSV of new reviews with the champion model")
    score.add_argument("--input", required=True, help="CSV of reviews to score")
    score.add_argument("--output", required=True, help="predictions CSV to write")
    score.add_argument("--text-col", default=DEFAULT_TEXT_COL)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_mlflow_warnings()
    try:
        if args.command == "score":
            rows = score_reviews(args.input, args.output, args.text_col)
            print(f"Scored {rows} reviews into {args.output}")
            return 0
        data = {"data_path": args.data, "text_col": args.text_col, "rating_col": args.rating_col}
        if args.once:
            outcome = retrain_logistic(**data)
            print(f"Retrain {outcome.status}: {outcome.message}")
            return 0
        serve(args.cron, data)
        return 0
    except ReviewDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def serve(cron: str, parameters: dict[str, str]) -> None:
    """Serve the deployment until Ctrl-C; runs never overlap (a new one is cancelled)."""
    with prefect_api() as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
        print(f"Prefect dashboard: {api_url.removesuffix('/api')}  (MLflow: run `mlflow ui`)", flush=True)
        retrain_logistic.serve(
            name=DEPLOYMENT,
            cron=cron,
            parameters=parameters,
            global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
            limit=1,
        )


if __name__ == "__main__":
    sys.exit(main())
