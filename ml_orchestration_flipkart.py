"""Scheduled retraining, monitoring and batch scoring with Prefect, on top of the tuning script's core.

    python ml_orchestration_flipkart.py                  # serve the retrain (every 5 min) and the monitor (hourly)
    python ml_orchestration_flipkart.py --once           # one retrain now, exit with its status
    python ml_orchestration_flipkart.py --once --with-feedback      # ... on the CSV plus the service's feedback
    python ml_orchestration_flipkart.py monitor --once   # one monitoring check of the prediction log now
    python ml_orchestration_flipkart.py score --input new.csv --output preds.csv

    python ml_orchestration_flipkart.py --work-pool retrain     # deploy both to a process work pool, then:
    prefect worker start --pool retrain                  # on this or another machine: runs them on schedule

Without PREFECT_API_URL, serving starts a local Prefect server (127.0.0.1, state in .prefect/)
and stops it on Ctrl-C; with it, the given server is used.
"""
# The flows live in review_sentiment/orchestration/; this script turns flags into one call of
# review_sentiment/orchestration/commands.py.
from __future__ import annotations

import argparse
import os
import sys

from review_sentiment import cli
from review_sentiment.constants import (
    DEFAULT_PREDICTION_LOG,
    DEFAULT_RATING_COL,
    DEFAULT_TEXT_COL,
    PREDICTION_LOG_ENV,
    SAMPLE_DATA,
)
from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.orchestration.local_prefect import quiet_prefect_env
from review_sentiment.tracking.alias_lock import NoAliasLock, require_alias_lock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="review CSV to retrain on (default: the one the champion was trained "
                                       f"from; {SAMPLE_DATA.name} when there is no champion)")
    parser.add_argument("--text-col", help=f"review text column (default: the champion's; {DEFAULT_TEXT_COL!r})")
    parser.add_argument("--rating-col", help=f"rating column (default: the champion's; {DEFAULT_RATING_COL!r})")
    parser.add_argument("--cron", default="*/5 * * * *", help="retrain schedule (UTC)")
    parser.add_argument("--once", action="store_true", help="run one retrain in the foreground and exit")
    parser.add_argument("--prediction-log", default=os.environ.get(PREDICTION_LOG_ENV, str(DEFAULT_PREDICTION_LOG)),
                        help="the service's prediction log, for monitoring and --with-feedback")
    parser.add_argument("--with-feedback", action="store_true",
                        help="retrain on the CSV plus every review that got a true label through the service")
    parser.add_argument("--trust-anonymous-feedback", action="store_true",
                        help="let labels given without an API key train, judge and trigger retrains")
    parser.add_argument("--allow-new-data", action="store_true",
                        help="let a model of another data file than the champion's compete with it")
    parser.add_argument("--unlocked-promotion", action="store_true",
                        help="move the champion alias even where no lock serialises alias moves (a tracking "
                             "server without REVIEW_SENTIMENT_LOCK_URL)")
    parser.add_argument("--monitor-cron", default="0 * * * *", help="monitoring schedule (UTC)")
    parser.add_argument("--work-pool", metavar="POOL",
                        help="deploy both schedules to this Prefect process work pool (needs PREFECT_API_URL) and "
                             "exit; `prefect worker start --pool POOL` runs them, on any machine")
    commands = parser.add_subparsers(dest="command")
    monitor = commands.add_parser("monitor", help="check the prediction log for drift (served hourly by default)")
    monitor.add_argument("--once", action="store_true", required=True, help="run one check now and exit")
    monitor.add_argument("--prediction-log", default=argparse.SUPPRESS, help="the service's prediction log")
    monitor.add_argument("--no-retrain", action="store_true", help="report only: never trigger a retrain")
    monitor.add_argument("--cooldown-hours", type=cli.positive, default=6.0,
                         help="after a triggered retrain, checks in this time do not trigger another")
    score = commands.add_parser("score", help="label a CSV of new reviews with the champion model")
    score.add_argument("--input", required=True, help="CSV of reviews to score")
    score.add_argument("--output", required=True, help="predictions CSV to write")
    score.add_argument("--text-col", default=DEFAULT_TEXT_COL, help=f"review text column ({DEFAULT_TEXT_COL!r})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.update(quiet_prefect_env(dict(os.environ)))  # Prefect reads its settings once, when first imported
    from review_sentiment.orchestration import commands

    data = {"data_path": args.data, "text_col": args.text_col, "rating_col": args.rating_col,
            "trust_anonymous_feedback": args.trust_anonymous_feedback, "allow_new_data": args.allow_new_data,
            "unlocked_promotion": args.unlocked_promotion}
    retrain = data | ({"feedback_log": args.prediction_log} if args.with_feedback else {})
    try:
        if args.command != "score" and not args.work_pool and not (args.command == "monitor" and args.no_retrain):
            require_alias_lock(args.unlocked_promotion)  # the work pool's workers check their own
        if args.command == "score":
            commands.score_file(args.input, args.output, args.text_col)
        elif args.command == "monitor":
            commands.monitor_once(data | {"prediction_log": args.prediction_log, "retrain": not args.no_retrain,
                                          "cooldown_hours": args.cooldown_hours})
        elif args.once:
            commands.retrain_once(retrain)
        elif args.work_pool:
            commands.deploy_to_pool(args.work_pool, args.cron, retrain, args.monitor_cron, data | {
                "prediction_log": args.prediction_log})
        else:
            commands.serve_schedules(args.cron, retrain, args.monitor_cron, data | {
                "prediction_log": args.prediction_log})
    except (ReviewDataError, NoAliasLock) as err:
        return cli.user_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
