"""A lock that serialises alias moves across every process sharing one registry.

MLflow has no compare-and-set for aliases, so promotion re-checks the champion and moves the alias
while holding this lock:
- an SQLite registry lives on one machine: an exclusive `flock` on a file beside the database, which
  the kernel releases if the holder dies;
- a PostgreSQL registry, or a tracking server whose processes are given a PostgreSQL URL in
  `REVIEW_SENTIMENT_LOCK_URL` (`stack.py env` exports the stack's): a session advisory lock, held
  across machines and released by the server when the holder's connection dies.
Anywhere else no lock can be had: moving the alias is refused in one line, unless the caller says the
race is acceptable (`--unlocked-promotion`).
"""
from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterator
from contextlib import closing, contextmanager

import mlflow

from review_sentiment.constants import LOCK_URL_ENV
from review_sentiment.databases import is_postgres, libpq_url, sqlite_file, without_password
from review_sentiment.processes import exclusive_file_lock

log = logging.getLogger(__name__)


class NoAliasLock(ValueError):
    """No lock serialises alias moves on this registry, and the caller did not accept racing."""


@contextmanager
def alias_lock(name: str, unlocked: bool = False) -> Iterator[None]:
    """Hold the registry's lock for registered model `name` until the block ends; `unlocked`: where no
    lock can be had, go on without one (with a warning) instead of raising NoAliasLock."""
    uri = mlflow.get_registry_uri()
    if (database := sqlite_file(uri)) is not None:
        with exclusive_file_lock(database.with_name(f"{database.name}.{name}.alias-lock")):
            yield
    elif (url := _postgres_lock_url(uri)) is not None:
        with _advisory_lock(url, name):
            yield
    else:
        require_alias_lock(unlocked)
        log.warning("Moving the alias on %s unlocked (--unlocked-promotion): concurrent promotions may race",
                    without_password(uri))
        yield


def require_alias_lock(unlocked: bool) -> None:
    """NoAliasLock now, before any work, where `alias_lock` could take no lock and `unlocked` is not given."""
    uri = mlflow.get_registry_uri()
    if sqlite_file(uri) is None and _postgres_lock_url(uri) is None and not unlocked:
        raise NoAliasLock(f"no lock serialises alias moves on {without_password(uri)}: set {LOCK_URL_ENV} to a "
                          f"PostgreSQL URL every promoting process shares (`stack.py env` exports it), or pass "
                          f"--unlocked-promotion to move the alias unlocked")


def _postgres_lock_url(uri: str) -> str | None:
    """The PostgreSQL database to lock on: the registry's own, else the one `REVIEW_SENTIMENT_LOCK_URL` names."""
    url = uri if is_postgres(uri) else os.environ.get(LOCK_URL_ENV)
    return url if url and is_postgres(url) else None


@contextmanager
def _advisory_lock(url: str, name: str) -> Iterator[None]:
    """A PostgreSQL session advisory lock keyed by the model's name; the server drops it with the connection."""
    import psycopg  # here: ~70 ms of imports that only a PostgreSQL lock needs

    try:
        connection = psycopg.connect(libpq_url(url), autocommit=True, connect_timeout=10)
    except psycopg.Error as err:
        raise NoAliasLock(f"cannot take the alias lock on {without_password(url)}: "
                          f"{str(err).strip().splitlines()[0]}") from None
    with closing(connection):
        key = zlib.crc32(f"review-sentiment alias {name}".encode())
        connection.execute("SELECT pg_advisory_lock(%s)", (key,))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
