"""Fixtures for every kind of test: real MLflow tracking stores (SQLite + artifacts) in temporary
folders, one tuning run on the sample that read-only tests share, and a real Prefect server when a
selected test runs flows."""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Generator, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from review_sentiment.constants import SAMPLE_DATA
from review_sentiment.orchestration.local_prefect import LocalServer, quiet_prefect_env
from tests.containers.engine import Images

if TYPE_CHECKING:
    from tests.helpers import Store

# MLflow and the package's stages are imported inside the fixtures that need them: with `-n auto`, the
# process that hands out tests loads this file too and runs none (importing them here cost it ~5 s
# before any worker started).

E2E_DIR = Path(__file__).parent / "e2e"
CONTAINERS_DIR = Path(__file__).parent / "containers"
PREFECT_SERVER = pytest.StashKey[LocalServer]()
IMAGES = pytest.StashKey[Images]()
FAILED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--model-uri", default=None,
        help="run tests/model against this registered model (models:/NAME/VERSION or models:/NAME@ALIAS, "
             "in the store MLFLOW_TRACKING_URI names) instead of models tuned on the sample")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fast loop (`-m "not e2e"`) does not import tests/e2e and tests/containers, whose every test it
    would deselect: ~2 s less in each test process."""
    if config.getoption("markexpr") == "not e2e" and collection_path in (E2E_DIR, CONTAINERS_DIR):
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is e2e: `-m "not e2e"` leaves out real servers and schedules. The
    container tests run last, so that their images build while the others run."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.get_closest_marker("container") is not None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """If a selected test runs flows, start their Prefect server now: it migrates a fresh database
    (~14 s) while the tests before them run, instead of in front of them."""
    if any("prefect_server" in item.fixturenames for item in session.items):
        home = Path(tempfile.mkdtemp(prefix="prefect-tests-"))
        env = quiet_prefect_env({k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
                                | {"PREFECT_HOME": str(home)})
        session.config.stash[PREFECT_SERVER] = LocalServer.start(env)
    if not session.config.option.collectonly and any(item.get_closest_marker("container") for item in session.items):
        # With `-n`, each test process has a `workerinput`; its run id is the same in all of them.
        session.config.stash[IMAGES] = Images(getattr(session.config, "workerinput", {}).get("testrunuid"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    server = session.config.stash.get(PREFECT_SERVER, None)
    if server:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)
    images = session.config.stash.get(IMAGES, None)
    if images:
        images.remove_folder()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture(autouse=True)
def _no_process_outlives_a_failed_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that fails before it ends or joins what it started (forked workers, a stopped writer, a
    command) would leave it running for the session, and a forked child left running holds up the test
    process's exit. Once a test has failed, the processes it started that are still alive are killed.
    Fixtures of a wider scope, set up before this one, started theirs earlier: those are left alone."""
    before = set(psutil.Process().children(recursive=True))  # a Process is its pid and start time
    yield
    if request.node.stash.get(FAILED, False):
        for process in set(psutil.Process().children(recursive=True)) - before:
            with suppress(psutil.NoSuchProcess):  # ended meanwhile
                process.kill()


@pytest.fixture(scope="session")
def prefect_server(request: pytest.FixtureRequest) -> str:
    """The API URL of a real Prefect server (`prefect server start`, as the CLI starts one) for the
    whole session, once it answers."""
    return request.config.stash[PREFECT_SERVER].wait_healthy()


@pytest.fixture(scope="session")
def container_images(request: pytest.FixtureRequest) -> tuple[dict[str, str], dict[str, str]]:
    """podman's environment and the images' names (APP_IMAGE, POSTGRES_IMAGE, BASE_IMAGE), once built."""
    return request.config.stash[IMAGES].wait()


@pytest.fixture(scope="session")
def new_store(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Path], Store]:
    """Makes an empty store in a folder by copying one whose tables are made: MLflow takes ~1.6 s to
    create its tables, a copy takes ~0.04 s."""
    import mlflow

    from tests.helpers import Store
    with pytest.MonkeyPatch.context() as monkeypatch:
        template = Store(tmp_path_factory.mktemp("empty-store"))
        template.activate(monkeypatch)
        mlflow.MlflowClient().search_experiments()

    def make(path: Path) -> Store:
        template.copy_to(path)
        with closing(sqlite3.connect(path / "mlflow.db")) as db, db:  # the Default experiment's artifacts: here
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                       (str(path / "mlruns" / "0"),))
        return Store(path)
    return make


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_store: Callable[[Path], Store]) -> Store:
    """A fresh, empty store for one test."""
    s = new_store(tmp_path)
    s.activate(monkeypatch)
    return s


@pytest.fixture
def untouched_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A store that does not exist yet: for tests that prove nothing was written to MLflow."""
    from tests.helpers import Store
    s = Store(tmp_path)
    s.activate(monkeypatch)
    return s


@pytest.fixture(scope="session")
def _tuned_once(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[[Path], Store]) -> Store:
    from tests.helpers import FAST, Store, run_script
    with pytest.MonkeyPatch.context() as monkeypatch:
        s = new_store(tmp_path_factory.mktemp("tuned"))
        s.activate(monkeypatch)
        return Store(s.path, run_script(FAST + ["--seed", "7"]))


@pytest.fixture
def tuned(_tuned_once: Store, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The store of one tuning run on the sample (run once per session); tests only read it."""
    _tuned_once.activate(monkeypatch)
    return _tuned_once


@pytest.fixture
def reviews_to_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the sample to score, in a folder that is the working folder, MLflow store and Prefect home."""
    for name in [k for k in os.environ if k.startswith("PREFECT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / ".prefect"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # main() sets it otherwise, for good
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "reviews.csv"
    copy.write_bytes(SAMPLE_DATA.read_bytes())
    return copy
