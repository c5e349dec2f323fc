"""How a route waits on the prediction log: answered only once committed, 503 with Retry-After when
the log is behind or stuck, so a client retries instead of losing a record."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

import psycopg
from fastapi import HTTPException

from review_sentiment.serving.prediction_log import LogFull, LogStuck

RETRY_AFTER = {"Retry-After": "1"}


def queued(write: Callable[..., asyncio.Future], *args: object) -> asyncio.Future:
    try:
        return write(*args)
    except LogFull as err:
        raise HTTPException(503, f"the prediction log is behind ({err}); retry shortly", RETRY_AFTER) from None


async def committed(pending: asyncio.Future) -> object:
    """The log's outcome once committed; 503 (Retry-After) when the disk does not take it in time."""
    try:
        return await pending
    except LogStuck as err:
        raise HTTPException(503, f"the prediction log has {err}; retry shortly", RETRY_AFTER) from None
    except (sqlite3.Error, psycopg.Error, ValueError) as err:  # the database refused this row itself
        raise HTTPException(503, f"the prediction log refused this: {err}") from None
