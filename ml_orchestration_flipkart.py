"""Scheduled retraining and batch scoring with Prefect, on top of the tuning script's core.

    python ml_orchestration_flipkart.py                  # serve the retrain every 5 minutes
    python ml_orchestration_flipkart.py --once           # one retrain now, exit with its status
    python ml_orchestration_flipkart.py score --input new.csv --output preds.csv

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
from review_sentiment.constants import DEFAULT_RATING_COL, DEFAULT_TEXT_COL, SAMPLE_DATA
from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.orchestration.local_prefect import quiet_prefect_env


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
    os.environ.update(quiet_prefect_env(dict(os.environ)))  # Prefect reads its settings once, when first imported
    from review_sentiment.orchestration import commands

    data = {"data_path": args.data, "text_col": args.text_col, "rating_col": args.rating_col}
    try:
        if args.command == "score":
            commands.score_file(args.input, args.output, args.text_col)
        elif args.once:
            commands.retrain_once(data)
        else:
            commands.serve_retrain(args.cron, data)
    except ReviewDataError as err:
        return cli.user_error(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
