"""How the Prefect flows' tasks behave: no input caching (they take DataFrames and models), and
brief retries for steps that touch files or the tracking store — but never for a user's bad data."""
from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from review_sentiment.data.reviews import ReviewDataError


def _not_a_data_error(_task, _task_run, state) -> bool:
    try:
        state.result()
    except ReviewDataError:
        return False
    except Exception:
        return True
    return True


io_step = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 2, 4], retry_condition_fn=_not_a_data_error)
cpu_step = task(cache_policy=NO_CACHE)
