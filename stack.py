"""Start, stop or inspect the local shared stack: PostgreSQL, an MLflow tracking server and a Prefect
server on it, all in one folder. Then export what `up` prints, and the three entry scripts use it.

    python stack.py up          # start what is not running (creates .stack/ the first time)
    eval "$(python stack.py env)"   # export MLFLOW_TRACKING_URI, PREFECT_API_URL, OPTUNA_STORAGE, ...
    python stack.py status      # what runs where
    python stack.py down        # stop everything; the data stays for the next `up`

Ports and host are the folder's: a later `up` reuses them, unless given again (while that part is stopped).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from review_sentiment import cli
from review_sentiment.orchestration.stack import DEFAULT_HOST, DEFAULT_PORTS, StackError, down, environment, status, up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=Path(".stack"), help="the stack's folder (data, logs, state)")
    # Not given: what the folder's last `up` used (the defaults the first time). Given: used from now on.
    parser.add_argument("--host", help=f"address to listen on (default {DEFAULT_HOST}; 0.0.0.0 lets workers on other "
                                       "machines in)")
    for key, default in DEFAULT_PORTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int,
                            help=f"(default {default}, or what the folder's last `up` used)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    cli.configure()
    args = parse_args(argv)
    try:
        if args.action == "up":
            print(f"Starting the stack in {args.dir} (PostgreSQL, MLflow server, Prefect server) ...", flush=True)
            up(args.dir, args.host, {key: port for key in DEFAULT_PORTS if (port := getattr(args, key)) is not None})
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
    except KeyboardInterrupt:  # what `up` had started runs on: `down` stops it
        return cli.interrupted()
    return 0


def print_status(folder: Path) -> None:
    for service, state, where in status(folder):
        print(f"  {service:<9} {state:<11} {where}")


def print_environment(folder: Path) -> None:
    for name, value in environment(folder).items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    sys.exit(main())
