"""What the entry scripts share: `configure()`, argument types that refuse bad values with a clear
message, and the one-line error with exit status 2 for a user's mistake (never a traceback)."""
from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from review_sentiment.constants import QUIET_MLFLOW_ENV
from review_sentiment.orchestration.local_prefect import quiet_prefect_env
from review_sentiment.processes import INTERRUPTED, quiet_cursors_cut_by_ctrl_c

USER_ERROR = 2  # the exit status of every user mistake, as argparse uses for bad flags
UNFLUSHED = 120  # the exit status when output could not be written at the end, as Python's own exit gives


def configure() -> None:
    """The process settings an entry script chooses, first thing in its main (importing the package
    sets nothing): MLflow prints no link per run and sends no telemetry (`QUIET_MLFLOW_ENV`), which the
    processes the command starts inherit; Prefect keeps its state inside the project and sends no
    telemetry, set before Prefect is first imported, since it reads its settings then. Values already in
    the environment win. A Ctrl-C that cuts a database read short is reported in one line, without
    SQLAlchemy's traceback of the cursor it left. Each printed line is written whole (`whole_lines`)."""
    os.environ.update(quiet_prefect_env({**QUIET_MLFLOW_ENV, **os.environ}))
    quiet_cursors_cut_by_ctrl_c()
    whole_lines()


def whole_lines() -> None:
    """Each line this process prints reaches its stdout or stderr in one write, flushed at its newline.
    The workers a command forks print on the same pipe, and unbuffered (PYTHONUNBUFFERED=1, as the image
    sets) `print` writes its text and its newline apart, so two workers' lines merged into one. Only the
    process's own streams: a test's capture of them is left as it is."""
    for stream, own in ((sys.stdout, sys.__stdout__), (sys.stderr, sys.__stderr__)):
        if stream is own and isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)


def end_now(code: int) -> NoReturn:
    """End the process with `code` once its output is flushed, without tearing down its objects one by one
    (~0.7 s after a tuning run): for a command that has written and closed everything. Output that cannot
    be flushed (a closed stdout, a broken pipe) is reported by the status, as Python's own exit does (120)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            code = code or UNFLUSHED
    os._exit(code)


def user_error(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return USER_ERROR


def interrupted() -> int:
    """Ctrl-C, once the command has cleaned up after it: the status a shell gives a process it ended."""
    print("interrupted (Ctrl-C)", file=sys.stderr)
    return INTERRUPTED


def at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def fraction(text: str) -> float:
    """Strictly between 0 and 1, e.g. a test share."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def share(text: str) -> float:
    """0 to 1 inclusive, e.g. a traffic share that may be none or all."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def study_storage(url: str) -> str:
    """An Optuna storage the trial claims can lock (`trial_queue._claiming`): a journal file (made absolute, so
    that a worker started elsewhere on the machine names the same one), an SQLite file or PostgreSQL."""
    from review_sentiment.databases import (  # SQLAlchemy: not for --help
        is_journal,
        is_postgres,
        storage_file,
        without_password,
    )
    if (file := storage_file(url)) is not None:
        _in_a_folder(file)
    if is_journal(url):
        return str(file)
    if not (url.startswith("sqlite:///") or is_postgres(url)):
        raise argparse.ArgumentTypeError(f"must be FILE.journal, sqlite:///FILE or postgresql://… (the storages "
                                         f"whose trial claims can be locked), got {without_password(url)}")
    return url


def _in_a_folder(file: Path) -> None:
    """A file the run creates if need be: its folder must exist (else a traceback at the first write)."""
    if not file.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {file.parent} to hold {file.name}")


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


LONGEST_TAG = 8000  # characters in an MLflow tag's value (mlflow.utils.validation.MAX_TAG_VAL_LENGTH, 3.x)


def tag_value(text: str) -> str:
    """A value every child run carries as a tag (a worker's name): MLflow refuses a longer one only when
    the run is written, seconds or hours later (on PostgreSQL; SQLite stores it whole)."""
    if not 0 < len(text) <= LONGEST_TAG:
        raise argparse.ArgumentTypeError(f"must be 1 to {LONGEST_TAG:,} characters, got {len(text):,}")
    return text
