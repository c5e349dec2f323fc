"""Reading the service's prediction log (written by `serving.prediction_log`): the A/B report and the
monitoring checks read it, read-only, while the service keeps writing."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pandas as pd


def require_log(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prediction log here (start the service, or pass --prediction-log)")


def read_log(path: Path, since: str | None = None) -> pd.DataFrame:
    """Logged predictions (those after `since`, an ISO time, if given) with their fed-back true
    label (NA where none)."""
    require_log(path)
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
        try:
            return pd.read_sql_query(
                "SELECT p.*, f.label AS true_label FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.id"
                " WHERE p.time > ? ORDER BY p.time", conn, params=(since or "",))
        except pd.errors.DatabaseError as err:
            raise ValueError(f"{path}: not a prediction log ({err.__cause__ or err})") from None
