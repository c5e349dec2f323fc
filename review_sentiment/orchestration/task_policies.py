"""How the Prefect flows' tasks behave: no input caching (they take DataFrames and models), and
brief retries for steps that touch files or the tracking store — but never for a user's bad data,
which Prefect's log then reports in one line instead of a traceback."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from review_sentiment.data.reviews import ReviewDataError
from review_sentiment.tracking.alias_lock import NoAliasLock

USER_ERRORS = (ReviewDataError, NoAliasLock)  # a user's data or setup: one line, never retried


def _not_a_data_error(_task, _task_run, state) -> bool:
    try:
        state.result()
    except USER_ERRORS:
        return False
    except Exception:
        return True
    return True


class _DataErrorsInOneLine(logging.Filter):
    """Prefect logs a failed flow with its traceback (about 80 lines); for a user's bad data the message
    itself says everything: keep the record, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            record.exc_info, record.exc_text = None, None
        return True


def data_errors_in_one_line() -> None:
    """Install the filter on the loggers Prefect's engine reports runs with (once per process: flows
    served by a runner run in processes of their own, so each flow calls this first)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DataErrorsInOneLine) for f in logger.filters):
            logger.addFilter(_DataErrorsInOneLine())


P = ParamSpec("P")
R = TypeVar("R")


def io_step(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A step that touches files or the tracking store: brief retries, never for a user's error."""
    return task(name=name, cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 2, 4],
                retry_condition_fn=_not_a_data_error)


def cpu_step(name: str) -> Callable[[Callable[P, R]], Task[P, R]]:
    """A step that only computes: no retries."""
    return task(name=name, cache_policy=NO_CACHE)
