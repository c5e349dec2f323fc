"""Scheduled retraining, monitoring and batch scoring with Prefect, on top of the tuning script's core.

    python ml_orchestration_flipkart.py                  # serve the retrain (every 5 min) and the monitor (hourly)
    python ml_orchestration_flipkart.py retrain          # one retrain now, exit with its status
    python ml_orchestration_flipkart.py retrain --with-feedback     # ... on the CSV plus the service's feedback
    python ml_orchestration_flipkart.py monitor          # one monitoring check of the prediction log now
    python ml_orchestration_flipkart.py score --input data/sample_reviews.csv --output preds.csv

    python ml_orchestration_flipkart.py deploy --work-pool retrain  # deploy both to a process work pool, then:
    prefect worker start --pool retrain                  # on this or another machine: runs them on schedule

Without PREFECT_API_URL, serving starts a local Prefect server (127.0.0.1, state in .prefect/)
and stops it on Ctrl-C; with it, the given server is used. Each command has its own --help.
Older spellings still work as they did: `--once` (= retrain), `--work-pool POOL` (= deploy),
`monitor --once` (= monitor), and options given before the command.
"""
# The flows live in review_sentiment/orchestration/; this script turns a command and its options into
# one call of review_sentiment/orchestration/commands.py.
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from review_sentiment import cli
from review_sentiment.constants import (
    DEFAULT_PREDICTION_LOG,
    DEFAULT_RATING_COL,
    DEFAULT_TEXT_COL,
    PREDICTION_LOG_ENV,
    SAMPLE_DATA,
)

# Each command's options, by group. The top level holds serve's (no command serves the schedules); an
# option given there before another command (the older spelling) counts unless the command gives it
# again: under a command, options shared with the top level default to "not given".
Option = tuple[tuple[str, ...], dict[str, Any]]  # add_argument's flags and keyword arguments
LINEAGE: list[Option] = [
    (("--data",), {"help": "review CSV to retrain on (default: the one the champion was trained from; "
                            f"{SAMPLE_DATA.name} when there is no champion)"}),
    (("--text-col",), {"help": f"review text column (default: the champion's; {DEFAULT_TEXT_COL!r})"}),
    (("--rating-col",), {"help": f"rating column (default: the champion's; {DEFAULT_RATING_COL!r})"}),
    (("--trust-anonymous-feedback",), {"action": "store_true",
                                       "help": "let labels given without an API key train, judge and trigger "
                                               "retrains"}),
    (("--allow-new-data",), {"action": "store_true",
                             "help": "let a model of another data file than the champion's compete with it"}),
    (("--unlocked-promotion",), {"action": "store_true",
                                 "help": "move the champion alias even where no lock serialises alias moves (a "
                                         "tracking server without REVIEW_SENTIMENT_LOCK_URL)"}),
]
LOG: list[Option] = [
    (("--prediction-log",), {"default": os.environ.get(PREDICTION_LOG_ENV, str(DEFAULT_PREDICTION_LOG)),
                             "help": "the service's prediction log (SQLite file or PostgreSQL URL), for "
                                     "monitoring and --with-feedback"}),
]
FEEDBACK: list[Option] = [
    (("--with-feedback",), {"action": "store_true",
                            "help": "retrain on the CSV plus every review that got a true label through the "
                                    "service"}),
]
SCHEDULES: list[Option] = [
    (("--cron",), {"default": "*/5 * * * *", "help": "retrain schedule (UTC)"}),
    (("--monitor-cron",), {"default": "0 * * * *", "help": "monitoring schedule (UTC)"}),
]
CHECK: list[Option] = [
    (("--no-retrain",), {"action": "store_true", "help": "report only: never trigger a retrain"}),
    (("--cooldown-hours",), {"type": cli.positive, "default": 6.0,
                             "help": "after a triggered retrain, checks in this time do not trigger another"}),
]
WORK_POOL: Option = (("--work-pool",), {"metavar": "POOL", "help": "the Prefect process work pool (made if missing; "
                                                                    "needs PREFECT_API_URL); `prefect worker start "
                                                                    "--pool POOL` runs the schedules, on any machine"})


def _add(parser: argparse.ArgumentParser, options: list[Option], under_command: bool) -> None:
    for flags, settings in options:
        parser.add_argument(*flags, **settings | ({"default": argparse.SUPPRESS} if under_command else {}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for group in (LINEAGE, LOG, FEEDBACK, SCHEDULES):
        _add(parser, group, under_command=False)
    parser.add_argument(*WORK_POOL[0], **WORK_POOL[1] | {"help": argparse.SUPPRESS})  # the older spelling of deploy
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # the older spelling of retrain
    commands = parser.add_subparsers(dest="command", metavar="{serve,retrain,monitor,score,deploy}")
    for name, summary, groups in (
            ("serve", "serve the retrain and the monitor on their schedules (what no command does)",
             (LINEAGE, LOG, FEEDBACK, SCHEDULES)),
            ("retrain", "retrain now, in the foreground, and exit with its status", (LINEAGE, LOG, FEEDBACK)),
            ("monitor", "check the prediction log for drift and feedback F1 now (may trigger a retrain)",
             (LINEAGE, LOG, CHECK)),
            ("deploy", "deploy both schedules to a Prefect process work pool and exit",
             (LINEAGE, LOG, FEEDBACK, SCHEDULES))):
        command = commands.add_parser(name, help=summary, description=summary)
        for group in groups:
            _add(command, group, under_command=group is not CHECK)  # the check's own options are monitor's alone
        if name == "monitor":
            command.add_argument("--once", action="store_true", help="accepted for older scripts: a check always "
                                                                     "runs once")
        if name == "deploy":
            command.add_argument(*WORK_POOL[0], **WORK_POOL[1] | {"required": True})
    score = commands.add_parser("score", help="label a CSV of new reviews with the champion model",
                                description="label a CSV of new reviews with the champion model")
    score.add_argument("--input", required=True, help="CSV of reviews to score")
    score.add_argument("--output", required=True, help="predictions CSV to write (whole, or not at all)")
    score.add_argument("--text-col", default=argparse.SUPPRESS, help=f"review text column ({DEFAULT_TEXT_COL!r})")
    args = parser.parse_args(argv)
    if args.command is None:
        args.command = "retrain" if args.once else "deploy" if args.work_pool else "serve"
    return args


def main(argv: list[str] | None = None) -> int:
    cli.configure()
    args = parse_args(argv)
    # After configure() (Prefect reads its settings on import), and once the flags are read: --help answers
    # without the seconds Prefect, MLflow and sklearn take to import (4.2 s; 3.7 s with the collector paused).
    from review_sentiment.processes import collector_paused
    with collector_paused():
        from review_sentiment.data.reviews import ReviewDataError
        from review_sentiment.orchestration import commands
        from review_sentiment.tracking.alias_lock import NoAliasLock, require_alias_lock

    data = {"data_path": args.data, "text_col": args.text_col, "rating_col": args.rating_col,
            "trust_anonymous_feedback": args.trust_anonymous_feedback, "allow_new_data": args.allow_new_data,
            "unlocked_promotion": args.unlocked_promotion}
    retrain = data | ({"feedback_log": args.prediction_log} if args.with_feedback else {})
    try:
        if args.command in ("serve", "retrain") or (args.command == "monitor" and not args.no_retrain):
            require_alias_lock(args.unlocked_promotion)  # a work pool's workers check their own
        if args.command == "score":
            commands.score_file(args.input, args.output, args.text_col or DEFAULT_TEXT_COL)
        elif args.command == "monitor":
            commands.monitor_once(data | {"prediction_log": args.prediction_log, "retrain": not args.no_retrain,
                                          "cooldown_hours": args.cooldown_hours})
        elif args.command == "retrain":
            commands.retrain_once(retrain)
        elif args.command == "deploy":
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
