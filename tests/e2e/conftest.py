"""Fixtures the e2e tests share."""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from review_sentiment.orchestration.stack import DEFAULT_PORTS, StackState, down, up
from tests.helpers import Store, free_port


@pytest.fixture
def own_store(_tuned_once: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A copy of the tuned registry of this test's own (artifacts stay where they are), active here."""
    store = _tuned_once.copy_to(tmp_path)
    store.activate(monkeypatch)
    return store


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    """A throwaway stack for the session, as `python stack.py up` starts it: a PostgreSQL cluster in a
    temporary folder, an MLflow server and a Prefect server on it; stopped (and checked gone) at the end."""
    folder = Path(tempfile.mkdtemp(prefix="stack-tests-"))
    folder.chmod(0o755)  # PostgreSQL runs as its own user (when tests run as root): it must reach the folder
    state = up(folder, "127.0.0.1", {key: free_port() for key in DEFAULT_PORTS})
    yield state
    assert sorted(down(folder)) == ["mlflow", "postgres", "prefect"]
    shutil.rmtree(folder)


def stack_env(state: StackState, **more: str) -> dict[str, str]:
    """The environment a client of the stack runs with: what `python stack.py env` exports."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))} | \
        state.environment() | more


def new_database(state: StackState, prefix: str) -> str:
    """A fresh database on the stack's PostgreSQL (tests must not see each other's rows); its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(state.postgres_url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return state.postgres_url(name)
