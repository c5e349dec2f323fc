"""Database URLs as users write them, turned into what SQLAlchemy needs: one place decides which
driver a `postgresql://` URL gets (psycopg 3, the one installed) for Optuna and the prediction log;
and how this process's SQLite files commit."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import sqlalchemy

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


JOURNAL_SUFFIX = ".journal"  # a storage named by a path ending so is Optuna's journal file, not a database


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_SCHEMES


def is_journal(url: str) -> bool:
    return url.endswith(JOURNAL_SUFFIX) and "://" not in url


def sqlalchemy_url(url: str) -> str:
    """`postgresql://` and `postgres://` get the psycopg driver (SQLAlchemy would pick psycopg2)."""
    if is_postgres(url):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def libpq_url(url: str) -> str:
    """A `postgresql://` URL as psycopg (libpq) reads it, whichever scheme `is_postgres` accepted."""
    return "postgresql://" + url.split("://", 1)[1]


def without_password(url: str) -> str:
    """For printing: the URL with its password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def sqlite_file(uri: str) -> Path | None:
    """The database file a `sqlite:///path` URI names (absolute, or relative to the working folder, as
    MLflow and SQLAlchemy read it); None for any other URI, or an in-memory database."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return None if path in ("", ":memory:") else Path(path).resolve()


def storage_file(url: str) -> Path | None:
    """The file an Optuna storage is kept in (a journal, or an SQLite database), if it is one."""
    return Path(url).resolve() if is_journal(url) else sqlite_file(url)


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


# the engines each open `sqlite_without_fsync_per_commit` block has seen, and whether each is of its store
_OPEN_BLOCKS: list[dict[sqlalchemy.Engine, bool]] = []


@contextmanager
def sqlite_without_fsync_per_commit(tracking_uri: str,
                                    how: Callable[[object, object], None] = write_ahead) -> Iterator[None]:
    """While the block runs, the connections SQLAlchemy opens to MLflow's store, when it is the SQLite
    file `tracking_uri` names, write ahead and sync at checkpoints, not at each commit (`write_ahead`; or
    as `how` sets them up).
    A tuning run commits thousands of times: one trial's child run took 23–86 ms with an fsync per
    commit (depending on what else writes to the disk) and 18–24 ms without. MLflow makes its engine
    itself, with no hook to reach it: the listener is on SQLAlchemy's Engine class for the block, and
    leaves every other database of the process alone. As the block ends, the store's connections are
    closed (their engines, made again when used, reconnect), so the file is whole and alone on disk."""
    if (store := sqlite_file(tracking_uri)) is None:
        yield
        return

    # every engine that connected in the block (Optuna's SQLite storage too, at each of its calls): whether
    # its database is the store, decided once per engine (a path resolved per call cost ~30 µs)
    engines: dict[sqlalchemy.Engine, bool] = {}

    def only_the_store(connection: object, record: object) -> None:
        if isinstance(connection, sqlite3.Connection) and _main_file(connection) == store:
            how(connection, record)

    def remember(connection: sqlalchemy.Connection) -> None:
        if (engine := connection.engine) not in engines:
            file = engine.url.database
            engines[engine] = Path(file).resolve() == store if file else False

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", only_the_store)
    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "engine_connect", remember)
    _OPEN_BLOCKS.append(engines)
    try:
        yield
    finally:
        del _OPEN_BLOCKS[next(i for i, seen in enumerate(_OPEN_BLOCKS) if seen is engines)]  # by identity
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", only_the_store)
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "engine_connect", remember)
        # the last connection closed writes the WAL back into the file and removes the -wal and -shm files:
        # now, not whenever the process tears down (if ever)
        _store_disconnected(engines)


def store_reconnected() -> None:
    """The pooled connections to the SQLite store of every open `sqlite_without_fsync_per_commit` block
    closed (each engine reconnects when next used). An interrupt (Ctrl-C) that lands while one of them
    reads leaves its statement unfinished, and so its read of the store open; a write on that connection
    after another process has committed then fails at once ("database is locked": SQLite cannot move a
    read begun before that commit on to a write). Taking back a failed run writes: it reconnects first."""
    for engines in _OPEN_BLOCKS:
        _store_disconnected(engines)


def _store_disconnected(engines: dict[sqlalchemy.Engine, bool]) -> None:
    """The pooled connections of the engines that are the store's closed (a checked-out one is left be)."""
    for engine, of_the_store in list(engines.items()):  # a thread may still be connecting (the writer's)
        if of_the_store:
            engine.dispose()


def _main_file(connection: sqlite3.Connection) -> Path | None:
    """The file of the connection's main database (None in memory)."""
    name = connection.execute("PRAGMA database_list").fetchone()[2]
    return Path(name).resolve() if name else None


def unsynced(connection: object, _record: object) -> None:
    """No fsync, and the rollback journal in memory: for a file made under a name of its own and synced
    once whole; one cut short is never used. The file stays in SQLite's default rollback journal (neither
    setting is kept in it), so that, once closed, every commit is in the file itself."""
    if isinstance(connection, sqlite3.Connection):
        connection.execute("PRAGMA journal_mode=MEMORY")
        connection.execute("PRAGMA synchronous=OFF")
