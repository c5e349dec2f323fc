"""Serve the registry's champion sentiment model over HTTP, and report on champion vs challenger.

    python serve_api.py                          # http://127.0.0.1:8000 (page), /docs (API)
    python serve_api.py --challenger-share 0.1   # 10% of callers get the model aliased `challenger`
    python serve_api.py report                   # the A/B report from the prediction log

The service follows the alias: when `champion` moves, the new version is served within
--poll-seconds, without a restart. Every prediction is appended to the prediction log.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import uvicorn

import registry
from ab_report import format_report
from api import create_app
from model_watcher import ModelWatcher
from prediction_log import PredictionLog, read_log

DEFAULT_URI = f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}"
DEFAULT_LOG = Path("predictions.db")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (loopback unless told otherwise)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-uri", default=DEFAULT_URI,
                        help="models:/NAME@ALIAS (followed as it moves) or models:/NAME/VERSION")
    parser.add_argument("--challenger-share", type=_share, default=0.0,
                        help="share of traffic for the version aliased `challenger` (0 to 1)")
    parser.add_argument("--poll-seconds", type=_positive, default=10.0, help="how often to look for alias moves")
    parser.add_argument("--prediction-log", type=Path, default=DEFAULT_LOG, help="SQLite prediction log")
    parser.add_argument("--access-log", action="store_true", help="print one line per HTTP request")
    commands = parser.add_subparsers(dest="command")
    report = commands.add_parser("report", help="print the champion/challenger report from the prediction log")
    report.add_argument("--prediction-log", type=Path, default=argparse.SUPPRESS, help="SQLite prediction log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    registry.quiet_mlflow_warnings()
    try:
        if args.command == "report":
            print(format_report(read_log(args.prediction_log), str(args.prediction_log)))
            return 0
        champion = registry.ModelRef.parse(args.model_uri)
        prediction_log = PredictionLog(args.prediction_log)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except sqlite3.Error as err:
        print(f"error: {args.prediction_log}: cannot use as the prediction log ({err})", file=sys.stderr)
        return 2
    challenger = registry.ModelRef(champion.name, registry.CHALLENGER, None) if args.challenger_share > 0 else None
    watcher = ModelWatcher(champion, challenger, args.poll_seconds)
    sharing = f" and {challenger} for {args.challenger_share:.0%} of traffic" if challenger else ""
    print(f"Serving {champion}{sharing}; predictions logged to {args.prediction_log}", flush=True)
    app = create_app(watcher, prediction_log, args.challenger_share)
    uvicorn.run(app, host=args.host, port=args.port, access_log=args.access_log, log_level="info")
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def _share(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
