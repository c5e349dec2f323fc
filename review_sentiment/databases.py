"""Database URLs as users write them, turned into what SQLAlchemy needs: one place decides which
driver a `postgresql://` URL gets (psycopg 3, the one installed) for Optuna and the prediction log;
and how this process's SQLite files commit."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import sqlalchemy

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` and `postgres://` get the psycopg driver (SQLAlchemy would pick psycopg2)."""
    if is_postgres(url):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def without_password(url: str) -> str:
    """For printing: the URL with its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


@contextmanager
def sqlite_without_fsync_per_commit() -> Iterator[None]:
    """While the block runs, every SQLite connection SQLAlchemy opens in this process (a tuning run's:
    MLflow's store) writes ahead and syncs at checkpoints, not at each commit (`write_ahead`). A
    tuning run commits thousands of times: one trial's child run took 23–86 ms with an fsync per
    commit (depending on what else writes to the disk) and 18–24 ms without."""
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", write_ahead)
    try:
        yield
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", write_ahead)


def write_ahead(connection: object, _record: object) -> None:
    """WAL without an fsync per commit: a killed process loses nothing committed; a power cut can lose
    the last commits, never the file. Read-only connections (and aiosqlite's, PostgreSQL's) are left alone."""
    if not isinstance(connection, sqlite3.Connection):
        return
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:  # read-only: it cannot switch the file's journal
        return
    connection.execute("PRAGMA synchronous=NORMAL")
