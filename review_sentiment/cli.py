"""What the three entry scripts share: argument types that refuse bad values with a clear message,
and the one-line error with exit status 2 for a user's mistake (never a traceback)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

USER_ERROR = 2  # the exit status of every user mistake, as argparse uses for bad flags


def user_error(err: Exception) -> int:
    print(f"error: {err}", file=sys.stderr)
    return USER_ERROR


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


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value
