"""One rule for the file an SQLite URI names, shared by the WAL switch, the alias lock, the default
journal's folder and the child-run writer (MLflow percent-encodes the path of its default URI)."""
from __future__ import annotations

from pathlib import Path

import pytest

from review_sentiment.databases import sqlite_file


@pytest.mark.parametrize(("uri", "expected"), [
    ("sqlite:////tmp/a b/mlflow.db", Path("/tmp/a b/mlflow.db")),
    ("sqlite:////tmp/a%20b/mlflow.db", Path("/tmp/a b/mlflow.db")),
    ("sqlite:////tmp/a%3Fb/mlflow.db?timeout=5", Path("/tmp/a?b/mlflow.db")),
    ("sqlite:///rel.db", Path("rel.db").resolve()),
    ("sqlite:///:memory:", None),
    ("sqlite://", None),
    ("postgresql://u:p@host/db", None),
    ("http://127.0.0.1:5000", None),
])
def test_the_file_an_sqlite_uri_names(uri: str, expected: Path | None) -> None:
    assert sqlite_file(uri) == expected
