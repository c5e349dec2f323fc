"""Reading the service's prediction log (written by `serving.prediction_log`): the A/B report and the
monitoring checks read it, read-only, while the service keeps writing. An SQLite file, or PostgreSQL
for a `postgresql://` URL, where a `row` column numbers rows as SQLite's rowid does."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pandas as pd
import sqlalchemy

from review_sentiment.constants import ANONYMOUS
from review_sentiment.databases import is_postgres, sqlalchemy_url, without_password

PREDICTION_COLUMNS = ["row", "review", "label", "score", "model_name", "model_version", "time"]
FEEDBACK_COLUMNS = ["row", "true_label", "label", "model_name", "model_version", "giver", "feedback_client"]


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
    return frame.drop(columns=["row"], errors="ignore")


def read_new(target: str | Path, after_prediction: int, after_feedback: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a check has not seen yet, by row order (commit order, unlike the request times): the
    predictions past row `after_prediction`, and the feedback past row `after_feedback` with the
    prediction it labels, however old that is (feedback comes late). Each frame's `row` is its rowid."""
    with _reading(target) as (conn, row):
        predictions = pd.read_sql_query(
            sqlalchemy.text(f"SELECT {row} AS {', '.join(PREDICTION_COLUMNS)} FROM predictions "
                            f"WHERE {row} > :after ORDER BY {row}"), conn, params={"after": after_prediction})
        feedback = pd.read_sql_query(
            sqlalchemy.text(f"SELECT f.{row} AS row, f.label AS true_label, p.label, p.model_name, p.model_version, "
                            f"{_provenance(conn)} "
                            f"FROM feedback f JOIN predictions p ON p.id = f.prediction_id WHERE f.{row} > :after "
                            f"ORDER BY f.{row}"), conn, params={"after": after_feedback})
    return predictions, feedback


def _provenance(conn: sqlalchemy.Connection) -> str:
    """Who gave each label and from where (`giver, feedback_client`): NULLs in a log the service has not yet
    migrated to record them."""
    recorded = "giver" in {c["name"] for c in sqlalchemy.inspect(conn).get_columns("feedback")}
    return "f.giver AS giver, f.client AS feedback_client" if recorded else "NULL AS giver, NULL AS feedback_client"


@contextmanager
def _reading(target: str | Path) -> Iterator[tuple[sqlalchemy.Connection, str]]:
    """A read-only connection to the log and the name of its row-order column; FileNotFoundError if
    an SQLite log does not exist, ValueError if the database is not a log or cannot be reached."""
    require_log(target)
    if is_postgres(str(target)):
        engine = sqlalchemy.create_engine(sqlalchemy_url(str(target)), poolclass=sqlalchemy.NullPool)
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
