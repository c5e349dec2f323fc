"""Shared fixtures: a real MLflow tracking store (SQLite + artifacts) in a temporary folder."""
from __future__ import annotations

import sys
from contextlib import redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import mlflow
import pytest

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

import sentiment_mlflow_optuna  # noqa: E402

SAMPLE = PROJECT_DIR / "data" / "sample_reviews.csv"
FAST = ["--trials", "6", "--folds", "3"]


@dataclass(frozen=True)
class Store:
    """A tracking store folder; `uri` is what MLFLOW_TRACKING_URI says while it is active."""

    path: Path
    output: str = ""

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.path / 'mlflow.db'}"

    def activate(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point MLflow (and ./mlruns, via the cwd) at this store until the test ends."""
        monkeypatch.chdir(self.path)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", self.uri)
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", self.uri)  # mlflow.set_registry_uri exports it; undo it after
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A fresh, empty store for one test."""
    s = Store(tmp_path)
    s.activate(monkeypatch)
    return s


@pytest.fixture(scope="session")
def _tuned_once(tmp_path_factory: pytest.TempPathFactory) -> Store:
    with pytest.MonkeyPatch.context() as monkeypatch:
        s = Store(tmp_path_factory.mktemp("tuned"))
        s.activate(monkeypatch)
        return Store(s.path, run_script(FAST + ["--seed", "7"]))


@pytest.fixture
def tuned(_tuned_once: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store of one tuning run on the sample (run once per session); tests only read it."""
    _tuned_once.activate(monkeypatch)
    return _tuned_once


def run_script(args: list[str]) -> str:
    """Run the tuning script in-process; return what it printed, failing on a non-zero exit."""
    out = StringIO()
    with redirect_stdout(out):
        code = sentiment_mlflow_optuna.main(args)
    assert code == 0, out.getvalue()
    return out.getvalue()
