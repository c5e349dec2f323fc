"""Serve the registry's champion sentiment model over HTTP, and report on champion vs challenger.

    python serve_api.py                          # http://127.0.0.1:8000 (page), /docs (API)
    python serve_api.py --challenger-share 0.1   # 10% of callers get the model aliased `challenger`
    python serve_api.py report                   # the A/B report from the prediction log
    REVIEW_SENTIMENT_API_KEY=$(openssl rand -hex 16) python serve_api.py --host 0.0.0.0   # from other machines

The service follows the alias: when `champion` moves, the new version is served within
--poll-seconds, without a restart. A prediction is answered only once it is committed to the
prediction log. On an address other than loopback, POST /feedback needs the API key as
`Authorization: Bearer KEY` (--api-key, or the REVIEW_SENTIMENT_API_KEY environment variable).
"""
# The service lives in review_sentiment/serving/; this script turns flags into a call of
# review_sentiment/serving/service.py.
from __future__ import annotations

import argparse
import os
import sys

from review_sentiment import cli
from review_sentiment.constants import API_KEY_ENV, DEFAULT_MODEL_URI, DEFAULT_PREDICTION_LOG, PREDICTION_LOG_ENV


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback unless told otherwise)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-uri", default=DEFAULT_MODEL_URI,
                        help="models:/NAME@ALIAS (followed as it moves) or models:/NAME/VERSION")
    parser.add_argument("--challenger-share", type=cli.share, default=0.0,
                        help="share of traffic for the version aliased `challenger` (0 to 1)")
    parser.add_argument("--poll-seconds", type=cli.positive, default=10.0, help="how often to look for alias moves")
    parser.add_argument("--prediction-log", default=os.environ.get(PREDICTION_LOG_ENV, str(DEFAULT_PREDICTION_LOG)),
                        help=f"SQLite file, or a postgresql:// URL replicas share (default: ${PREDICTION_LOG_ENV}, "
                             f"else {DEFAULT_PREDICTION_LOG})")
    parser.add_argument("--no-prediction-log", action="store_true",
                        help="log nothing (for benchmarks: /feedback and the A/B report then have no data)")
    parser.add_argument("--log-queue-rows", type=int, default=20_000,
                        help="rows that may wait for the log's disk; beyond that /predict answers 503 + Retry-After")
    parser.add_argument("--log-wait-seconds", type=cli.positive, default=10.0,
                        help="how long a prediction waits to be on record before it is answered 503 + Retry-After")
    parser.add_argument("--shutdown-seconds", type=cli.positive, default=30.0,
                        help="on SIGTERM/Ctrl-C, requests still running after this are cancelled (their rows "
                             "are still written before exit)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"token POST /feedback requires (default: ${API_KEY_ENV}); needed off loopback")
    parser.add_argument("--access-log", action="store_true", help="print one line per HTTP request")
    commands = parser.add_subparsers(dest="command")
    report = commands.add_parser("report", help="print the champion/challenger report from the prediction log")
    report.add_argument("--prediction-log", default=argparse.SUPPRESS, help="SQLite file or postgresql:// URL")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.configure()
    args = parse_args(argv)
    # The service (FastAPI, MLflow, sklearn: seconds of imports) once the flags are read: --help answers at once.
    from review_sentiment.processes import collector_paused
    with collector_paused():  # its imports: 2.7 s, 2.3 s with the collector paused
        from review_sentiment.serving.service import ServiceSettings, build_app, print_report, serve
    try:
        if args.command == "report":
            print_report(args.prediction_log)
            return 0
        settings = ServiceSettings(host=args.host, port=args.port, model_uri=args.model_uri,
                                   challenger_share=args.challenger_share, poll_seconds=args.poll_seconds,
                                   prediction_log=None if args.no_prediction_log else args.prediction_log,
                                   log_queue_rows=args.log_queue_rows, log_wait_seconds=args.log_wait_seconds,
                                   shutdown_seconds=args.shutdown_seconds, api_key=args.api_key or None,
                                   access_log=args.access_log)
        app = build_app(settings)
    except (ValueError, FileNotFoundError) as err:
        return cli.user_error(err)
    serve(app, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
