"""Start, stop or inspect the local shared stack: PostgreSQL, an MLflow tracking server and a Prefect
server on it, all in one folder. Then export what `up` prints, and the three entry scripts use it.

    python stack.py up          # start what is not running (creates .stack/ the first time)
    eval "$(python stack.py env)"   # export MLFLOW_TRACKING_URI, PREFECT_API_URL, OPTUNA_STORAGE, ...
    python stack.py status      # what runs where
    python stack.py down        # stop everything; the data stays for the next `up`
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from review_sentiment import cli
from review_sentiment.orchestration.stack import StackError, down, environment, status, up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=Path(".stack"), help="the stack's folder (data, logs, state)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 lets workers on other machines in; the first `up` decides)")
    parser.add_argument("--postgres-port", type=int, default=55432)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--prefect-port", type=int, default=4200)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.action == "up":
            print(f"Starting the stack in {args.dir} (PostgreSQL, MLflow server, Prefect server) ...", flush=True)
            up(args.dir, args.host, (args.postgres_port, args.mlflow_port, args.prefect_port))
            print_status(args.dir)
            print("\nExport this to use it (or: eval \"$(python stack.py env)\"):")
            print_environment(args.dir)
        elif args.action == "down":
            stopped = down(args.dir)
            print(f"Stopped: {', '.join(stopped) or 'nothing was running'}. Data kept in {args.dir}.")
        elif args.action == "status":
            print_status(args.dir)
        else:
            print_environment(args.dir)
    except StackError as err:
        return cli.user_error(err)
    return 0


def print_status(folder: Path) -> None:
    for service, state, where in status(folder):
        print(f"  {service:<9} {state:<11} {where}")


def print_environment(folder: Path) -> None:
    for name, value in environment(folder).items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    sys.exit(main())
