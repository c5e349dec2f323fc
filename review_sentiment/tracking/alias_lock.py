"""A lock that serialises alias moves across processes sharing one tracking store.

MLflow has no compare-and-set for aliases, so promotion re-checks the champion and moves the alias
while holding this lock. A SQLite store lives on one machine: an exclusive `flock` on a file beside
the database, which the kernel releases if the holder dies (no stale locks). Other stores have no lock
yet, and promotion says so once; a PostgreSQL store will use an advisory lock (see the README's
"Guarantees").
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from review_sentiment.processes import exclusive_file_lock

log = logging.getLogger(__name__)
_warned: set[str] = set()


@contextmanager
def alias_lock(name: str) -> Iterator[None]:
    """Hold the store's lock for registered model `name` until the block ends."""
    uri = mlflow.get_registry_uri()
    database = _sqlite_path(uri)
    if database is None:
        if uri not in _warned:
            _warned.add(uri)
            log.warning("Alias moves on %s are not locked across processes: concurrent promotions may race", uri)
        yield
        return
    with exclusive_file_lock(database.with_name(f"{database.name}.{name}.alias-lock")):
        yield


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///path` URI (absolute or relative to the working folder)."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path == "/:memory:":
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve()
