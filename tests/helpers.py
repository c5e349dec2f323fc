"""What tests of every kind share: the tracking store they work in, how to run the tuning script,
and how to wait for a condition instead of sleeping."""
from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities.model_registry import ModelVersion

import sentiment_mlflow_optuna
from review_sentiment.constants import MODEL_NAME, PROJECT_DIR, SAMPLE_DATA
from review_sentiment.data.reviews import Split, load_reviews, split_reviews
from review_sentiment.modeling.families import build_pipeline
from review_sentiment.modeling.linear import decision_values
from review_sentiment.modeling.metrics import macro_f1
from review_sentiment.tracking.model_logging import compact_for_saving, log_sentiment_model, log_training_reviews
from review_sentiment.tracking.orphans import process_tags
from review_sentiment.tracking.promotion import PROTECTED, Evidence
from review_sentiment.tracking.records import Lineage, VersionRecord
from review_sentiment.tracking.registry import register

SAMPLE = SAMPLE_DATA
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

    def copy_to(self, folder: Path) -> Store:
        """A copy of the store's database in `folder` (artifacts stay where they are). SQLite's backup,
        not a file copy: a store a tuning run wrote is in WAL mode, and its last commits may still be in
        the `-wal` file beside it."""
        with closing(sqlite3.connect(self.path / "mlflow.db")) as source, \
                closing(sqlite3.connect(folder / "mlflow.db")) as copy:
            source.backup(copy)
        return Store(folder)


def run_script(args: list[str]) -> str:
    """Run the tuning script in-process; return what it printed, failing on a non-zero exit."""
    out = StringIO()
    with redirect_stdout(out):
        code = sentiment_mlflow_optuna.main(args)
    assert code == 0, out.getvalue()
    return out.getvalue()


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `condition` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another connection holds an SQLite file's write lock (as another process could) until the block ends."""
    with closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nothing_was_written(folder: Path, reviews: Path) -> bool:
    return (reviews.read_bytes() == SAMPLE.read_bytes() and not (folder / "mlflow.db").exists()
            and not (folder / ".prefect" / "prefect.db").exists())  # no Prefect API was started


MODELS_LOGGED_BEFORE_PACKAGE = PROJECT_DIR / "tests" / "fixtures" / "models_logged_before_package"


def register_models_logged_before_package() -> dict[str, str]:
    """Register the model directories that the pre-package code logged (see the fixture's README) as
    versions of the project's model in the active store; returns each family's version."""
    versions = {}
    mlflow.set_experiment("models-logged-before-package")  # not the active one of an earlier store
    with tempfile.TemporaryDirectory() as unpacked, tarfile.open(MODELS_LOGGED_BEFORE_PACKAGE / "models.tar.gz") as tar:
        tar.extractall(unpacked, filter="data")
        for family in ("LogisticRegression", "LinearSVM"):
            with mlflow.start_run(run_name=f"logged-before-package-{family}") as run:
                mlflow.log_artifacts(str(Path(unpacked) / family), "model")
            version = mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME, tags={"family": family})
            versions[family] = str(version.version)
    return versions


def expected_from_models_logged_before_package() -> dict:
    """The texts, and per family the labels and positive scores the pre-package code gave for them."""
    return json.loads((MODELS_LOGGED_BEFORE_PACKAGE / "expected.json").read_text(encoding="utf-8"))


# Models to promote: Logistic Regressions on the sample's split, logged and registered as the pipeline does.
STRONG = {"tfidf_max_features": 10000, "tfidf_min_df": 1, "tfidf_max_df": 0.9, "tfidf_ngram_max": 2,
          "tfidf_sublinear_tf": True, "model_C": 1.0, "model_solver": "liblinear"}
FAIR = STRONG | {"tfidf_max_features": 40, "tfidf_ngram_max": 1}
WEAK = STRONG | {"tfidf_max_features": 3, "model_C": 0.0001}


def decisions(pipeline, texts) -> np.ndarray:
    """`linear.decision_values` of texts, through every step of a pipeline before the model."""
    return decision_values(pipeline[-1], pipeline[:-1].transform(texts))


def the_split(seed: int = 42) -> Split:
    return split_reviews(load_reviews(SAMPLE), 0.3, 2, seed)


def registered(texts: pd.Series, labels, params: dict, record_training: bool = True,
               lineage: Lineage | None = None, name: str = MODEL_NAME) -> ModelVersion:
    """A Logistic Regression trained on `texts`, logged and registered as the pipeline logs them; with
    `lineage`, its record names it (as the tuning run and the retrain record theirs)."""
    pipeline = compact_for_saving(build_pipeline("LogisticRegression", params, 0).fit(texts, labels))
    mlflow.set_experiment("promotion")
    with mlflow.start_run():
        mlflow.set_tags(process_tags())  # which process wrote it, as every run of ours says
        info = log_sentiment_model(pipeline, ["great"])
        if record_training:
            log_training_reviews(texts)
    tags = {"family": "LogisticRegression"}
    if lineage is not None:
        tags = VersionRecord("LogisticRegression", "test", lineage, "", "", info.run_id, None, info.run_id).tags()
    return register(info, name, tags)


def protected(split: Split) -> Evidence:
    """The split's held-out reviews as the evidence promotion judges on."""
    return Evidence.of(PROTECTED, split.X_test, split.y_test)


def f1_of(version: ModelVersion, texts: pd.Series, labels, name: str = MODEL_NAME) -> float:
    return macro_f1(labels, mlflow.sklearn.load_model(f"models:/{name}/{version.version}").predict(texts))


def rendered(url: str, budget_ms: int = 20_000) -> str:
    """The page's DOM after its scripts ran, in headless Chromium (Debian's `chromium`; .ci/run installs
    it). No network: every host name but 127.0.0.1 fails to resolve, as on a machine offline."""
    chromium = shutil.which("chromium")
    assert chromium, "these tests need Debian's chromium: apt-get install chromium"
    with tempfile.TemporaryDirectory() as profile:
        page = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
            capture_output=True, text=True, timeout=120)
    assert page.returncode == 0, page.stderr[-2000:]
    return page.stdout
