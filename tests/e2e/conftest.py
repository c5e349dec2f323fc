"""Fixtures the e2e tests share."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import Store


@pytest.fixture
def own_store(_tuned_once: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A copy of the tuned registry of this test's own (artifacts stay where they are), active here."""
    shutil.copy(_tuned_once.path / "mlflow.db", tmp_path / "mlflow.db")
    store = Store(tmp_path)
    store.activate(monkeypatch)
    return store
