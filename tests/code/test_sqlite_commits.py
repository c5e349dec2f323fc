"""The tuning run's SQLite setting (WAL, no fsync per commit) reaches only MLflow's store file, only
while the block runs, and leaves connections that cannot change the file alone. The writer's setting for
the store it makes ahead (`unsynced`) leaves a file in SQLite's default journal, whole once closed."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import sqlalchemy

from review_sentiment.databases import sqlite_without_fsync_per_commit, unsynced


def journal_mode(engine: sqlalchemy.Engine) -> str:
    with engine.connect() as connection:
        return connection.exec_driver_sql("PRAGMA journal_mode").scalar()


def test_only_connections_to_the_store_opened_during_the_block_write_ahead(tmp_path: Path) -> None:
    for name in ("during.db", "after.db", "read-only.db", "other.db"):
        with closing(sqlite3.connect(tmp_path / name)) as db, db:
            db.execute("CREATE TABLE t (x)")
            db.execute("INSERT INTO t VALUES (1)")
    with sqlite_without_fsync_per_commit(f"sqlite:///{tmp_path / 'during.db'}"):
        during = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'during.db'}")
        assert journal_mode(during) == "wal"
        with during.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        reader = sqlalchemy.create_engine(f"sqlite:///file:{tmp_path / 'read-only.db'}?mode=ro&uri=true")
        with reader.connect() as connection:  # switching its journal would fail: it is left as it is
            assert connection.exec_driver_sql("SELECT x FROM t").scalar() == 1
        assert journal_mode(reader) == "delete"
        other = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'other.db'}")  # not MLflow's store: untouched
        assert journal_mode(other) == "delete"
    after = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'after.db'}")
    assert journal_mode(after) == "delete"


def test_the_stores_connections_are_closed_as_the_block_ends_and_open_again_when_used(tmp_path: Path) -> None:
    """The tuning command ends without tearing its objects down (`os._exit`): the block's end is when the
    WAL goes back into the file, which is then whole and alone on disk."""
    store = tmp_path / "mlflow.db"
    with sqlite_without_fsync_per_commit(f"sqlite:///{store}"):
        engine = sqlalchemy.create_engine(f"sqlite:///{store}")
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert {p.name for p in tmp_path.iterdir()} == {"mlflow.db", "mlflow.db-wal", "mlflow.db-shm"}
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]
    with closing(sqlite3.connect(store)) as db:  # committed, in the file itself
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    with engine.connect() as connection:  # the engine outlives the block (MLflow caches its store)
        assert connection.exec_driver_sql("SELECT x FROM t").scalar() == 1


def test_a_file_made_unsynced_keeps_the_default_journal_and_every_commit_once_closed(tmp_path: Path) -> None:
    made = tmp_path / "made.db"
    with sqlite_without_fsync_per_commit(f"sqlite:///{made}", unsynced):
        engine = sqlalchemy.create_engine(f"sqlite:///{made}", poolclass=sqlalchemy.NullPool)
        with engine.begin() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 0  # OFF
            connection.exec_driver_sql("CREATE TABLE t (x)")
            connection.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert [p.name for p in tmp_path.iterdir()] == ["made.db"]  # no journal or WAL beside it
    with closing(sqlite3.connect(made)) as db:  # a new connection: neither setting was kept in the file
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
