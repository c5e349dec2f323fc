"""Reading the service's prediction log (written by `serving.prediction_log`): the A/B report and the
monitoring checks read it, read-only, while the service keeps writing."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pandas as pd

PREDICTION_COLUMNS = ["row", "review", "label", "score", "model_name", "model_version", "time"]
FEEDBACK_COLUMNS = ["row", "true_label", "label", "model_name", "model_version"]


def require_log(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prediction log here (start the service, or pass --prediction-log)")


def read_log(path: Path) -> pd.DataFrame:
    """Every logged prediction with its fed-back true label (NA where none) and when that came."""
    with _reading(path) as conn:
        return pd.read_sql_query(
            "SELECT p.*, f.label AS true_label, f.time AS feedback_time FROM predictions p"
            " LEFT JOIN feedback f ON f.prediction_id = p.id ORDER BY p.rowid", conn)


def read_new(path: Path, after_prediction: int, after_feedback: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What a check has not seen yet, by row order (commit order, unlike the request times): the
    predictions past row `after_prediction`, and the feedback past row `after_feedback` with the
    prediction it labels, however old that is (feedback comes late). Each frame's `row` is its rowid."""
    with _reading(path) as conn:
        predictions = pd.read_sql_query(
            f"SELECT rowid AS {', '.join(PREDICTION_COLUMNS)} FROM predictions WHERE rowid > ? ORDER BY rowid",
            conn, params=(after_prediction,))
        feedback = pd.read_sql_query(
            "SELECT f.rowid AS row, f.label AS true_label, p.label, p.model_name, p.model_version FROM feedback f"
            " JOIN predictions p ON p.id = f.prediction_id WHERE f.rowid > ? ORDER BY f.rowid",
            conn, params=(after_feedback,))
    return predictions, feedback


@contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the log; FileNotFoundError if there is none, ValueError if the file
    is not one."""
    require_log(path)
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        try:
            yield conn
        except pd.errors.DatabaseError as err:
            raise ValueError(f"{path}: not a prediction log ({err.__cause__ or err})") from None
