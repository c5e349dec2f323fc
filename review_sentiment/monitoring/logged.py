"""Reading the service's prediction log (written by `serving.prediction_log`): the A/B report and the
monitoring checks read it, read-only, while the service keeps writing. An SQLite file, or PostgreSQL
for a `postgresql://` URL, where a `row` column numbers rows as SQLite's rowid does.

What a check has not read yet: SQLite's writers take the file's one write lock from their first row
to their commit, and a row's rowid is one past the largest there, so rowids grow in commit order and
"past the last rowid read" misses nothing. PostgreSQL's `row` comes from a sequence when the row is
inserted, and transactions commit in another order: a reader that stops at row N can see a row below
N commit after it (0.3–1.2 % of rows never read, 2–4 replicas under load). Each row records the
transaction that wrote it (`xid`, schema 3) and a check reads the rows of transactions below its
snapshot's xmin, none of which is still running: that set is final, and the next check starts at this
xmin. Rows logged before schema 3 (no xid) are read past `row`, as before."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import sqlalchemy

from review_sentiment.constants import ANONYMOUS
from review_sentiment.databases import is_postgres, sqlalchemy_url, without_password

PREDICTION_COLUMNS = ["row", "review", "label", "score", "probability", "model_name", "model_version", "time"]
FEEDBACK_COLUMNS = ["row", "true_label", "label", "probability", "model_name", "model_version", "giver",
                    "feedback_client"]


def require_log(target: str | Path) -> None:
    """An SQLite log must exist (a PostgreSQL one is checked when read)."""
    if not is_postgres(str(target)) and not Path(target).is_file():
        raise FileNotFoundError(f"{target}: no prediction log here (start the service, or pass --prediction-log)")


def trusted(giver: pd.Series, trust_anonymous: bool) -> pd.Series:
    """Which fed-back labels may train and judge models: those given with an API key; anonymous ones
    (and labels logged before givers were recorded) only when the operator says so."""
    return pd.Series(True, index=giver.index) if trust_anonymous else giver.notna() & (giver != ANONYMOUS)


def read_log(target: str | Path) -> pd.DataFrame:
    """Every logged prediction with its fed-back true label (NA where none), when that came and who gave it."""
    with _reading(target) as (conn, row):
        frame = pd.read_sql_query(
            f"SELECT p.*, f.label AS true_label, f.time AS feedback_time, {_provenance(conn)} FROM predictions p"
            f" LEFT JOIN feedback f ON f.prediction_id = p.id ORDER BY p.{row}", conn)
    return frame.drop(columns=["row", "xid"], errors="ignore")


@dataclass(frozen=True)
class Cursor:
    """Where a check stopped reading a log: past `prediction_row` and `feedback_row` (SQLite's rowid; on
    PostgreSQL, for rows logged before schema 3), and on PostgreSQL every transaction below `xid` (the
    snapshot's xmin; 0: none read yet)."""

    prediction_row: int = 0
    feedback_row: int = 0
    xid: int = 0


@dataclass(frozen=True)
class NewRows:
    predictions: pd.DataFrame
    feedback: pd.DataFrame
    cursor: Cursor  # the next read starts here: past these rows
    log_id: str | None  # the log's identity (None: a log the service has not migrated to schema 3 yet)


def read_new(target: str | Path, after: Cursor) -> NewRows:
    """What a check has not seen yet, each row exactly once across checks however the service's
    transactions commit (see the module): the predictions past `after`, and the feedback past it with
    the prediction it labels, however old that is (feedback comes late). Each frame's `row` is its
    rowid (PostgreSQL: its `row`), and frames are in that order."""
    with _reading(target) as (conn, row):
        logged = "probability" in _columns(conn, "predictions")  # the service has migrated this log to schema 3
        answered = ", ".join(c if c != "probability" or logged else "NULL AS probability"
                             for c in PREDICTION_COLUMNS[1:])
        params: dict[str, int | str] = {"prediction_row": after.prediction_row, "feedback_row": after.feedback_row}
        xmin, after_xid, by_xid = after.xid, after.xid, row == "row" and _postgres_schema(conn) >= 3
        if by_xid:  # the snapshot's (REPEATABLE READ: one snapshot for every query here)
            xmin = int(conn.execute(sqlalchemy.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
                       .scalar_one())
            if after_xid > xmin:  # xmin only grows: the log was restored into another cluster, whose ids mean
                after_xid = 0  # nothing to this cursor; its `row` still does
            params |= {"xid": str(after_xid), "xmin": str(xmin)}
        predictions = pd.read_sql_query(
            sqlalchemy.text(f"SELECT {row} AS row, {answered} FROM predictions "
                            f"WHERE {_unread('', row, 'prediction_row', by_xid, after_xid)} ORDER BY {row}"),
            conn, params=params)
        feedback = pd.read_sql_query(
            sqlalchemy.text(f"SELECT f.{row} AS row, f.label AS true_label, p.label, "
                            f"{'p.probability' if logged else 'NULL AS probability'}, p.model_name, p.model_version, "
                            f"{_provenance(conn)} FROM feedback f JOIN predictions p ON p.id = f.prediction_id "
                            f"WHERE {_unread('f.', row, 'feedback_row', by_xid, after_xid)} ORDER BY f.{row}"),
            conn, params=params)
        identity = _identity(conn)
    cursor = Cursor(max(after.prediction_row, int(predictions["row"].max()) if len(predictions) else 0),
                    max(after.feedback_row, int(feedback["row"].max()) if len(feedback) else 0), xmin)
    return NewRows(predictions, feedback, cursor, identity)


def _unread(table: str, row: str, after_row: str, by_xid: bool, after_xid: int) -> str:
    """The WHERE clause of the rows past the cursor. By xid: the rows of transactions in [after, xmin)
    and the rows logged before schema 3 past `row`. A cursor without an xid (a check of a log not yet
    migrated, or by a monitor before schema 3) bounds the xid rows by `row` too: else they would be
    read again."""
    past_row, below = f"{table}{row} > :{after_row}", f"{table}xid < CAST(:xmin AS xid8)"
    if not by_xid:
        return past_row
    if after_xid == 0:
        return f"{past_row} AND ({table}xid IS NULL OR {below})"
    return f"(({table}xid IS NULL AND {past_row}) OR ({table}xid >= CAST(:xid AS xid8) AND {below}))"


def _postgres_schema(conn: sqlalchemy.Connection) -> int:
    return conn.execute(sqlalchemy.text("SELECT max(version) FROM schema_version")).scalar() or 0


def log_identity(target: str | Path) -> str | None:
    """The log's identity, stored in it when it was made (or migrated to schema 3): the same whichever
    path or URL names it. None for a log the service has not migrated yet. FileNotFoundError and
    ValueError as `read_log`."""
    with _reading(target) as (conn, _):
        return _identity(conn)


def _identity(conn: sqlalchemy.Connection) -> str | None:
    if not sqlalchemy.inspect(conn).has_table("log_identity"):
        return None
    return conn.execute(sqlalchemy.text("SELECT min(id) FROM log_identity")).scalar()


def _columns(conn: sqlalchemy.Connection, table: str) -> list[str]:
    """The table's columns as a query returns them, not by reflection: SQLAlchemy knows no type for
    PostgreSQL's `xid` (xid8) and warns."""
    return list(conn.execute(sqlalchemy.text(f"SELECT * FROM {table} WHERE 1 = 0")).keys())


def _provenance(conn: sqlalchemy.Connection) -> str:
    """Who gave each label and from where (`giver, feedback_client`): NULLs in a log the service has not yet
    migrated to record them."""
    recorded = "giver" in _columns(conn, "feedback")
    return "f.giver AS giver, f.client AS feedback_client" if recorded else "NULL AS giver, NULL AS feedback_client"


@contextmanager
def _reading(target: str | Path) -> Iterator[tuple[sqlalchemy.Connection, str]]:
    """A read-only connection to the log and the name of its row-order column; FileNotFoundError if
    an SQLite log does not exist, ValueError if the database is not a log or cannot be reached."""
    require_log(target)
    if is_postgres(str(target)):
        engine = sqlalchemy.create_engine(sqlalchemy_url(str(target)), poolclass=sqlalchemy.NullPool,
                                          isolation_level="REPEATABLE READ")  # one snapshot for every query
        row = "row"
    else:
        path = Path(target).resolve()
        engine = sqlalchemy.create_engine("sqlite://", poolclass=sqlalchemy.NullPool, creator=lambda: sqlite3.connect(
            f"{path.as_uri()}?mode=ro", uri=True))
        row = "rowid"
    try:
        with closing(engine.connect()) as conn:
            yield conn, row
    except (sqlalchemy.exc.DBAPIError, pd.errors.DatabaseError) as err:
        driver_error = getattr(err, "orig", None) or getattr(err.__cause__, "orig", None) or err.__cause__ or err
        cause = str(driver_error).strip().splitlines()[0]
        raise ValueError(f"{without_password(str(target))}: not a prediction log ({cause})") from None
    finally:
        engine.dispose()
