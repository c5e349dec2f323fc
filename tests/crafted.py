"""Registry versions an attacker (or a stale checkout) could point an alias at: logged by other means
than this project's, each carrying something our loading must refuse."""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
import yaml
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from review_sentiment.constants import MODEL_NAME
from review_sentiment.tracking.model_logging import TRUSTED_TYPES

SYSTEM = f"{os.system.__module__}.{os.system.__name__}"  # posix.system
# Given, not inferred: MLflow infers requirements by loading the model in a new process (~4 s each), and
# what they say plays no part in what loading refuses.
REQUIREMENTS = ["scikit-learn"]


def trusting_system(fitted: Pipeline) -> ModelVersion:
    """A working model with `os.system` inside, whose MLmodel asks skops to trust it (MLflow itself
    refuses to save one whose types it is not told to trust)."""
    evil = Pipeline([("run", FunctionTransformer(os.system)), ("model", fitted)])
    mlflow.set_experiment("crafted")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(evil, name="model", serialization_format="skops",
                                        skops_trusted_types=[*TRUSTED_TYPES, SYSTEM], pip_requirements=REQUIREMENTS)
    return mlflow.register_model(info.model_uri, MODEL_NAME)


def hiding_system(fitted: Pipeline) -> ModelVersion:
    """The same skops file, with an MLmodel that trusts only our type: the file itself must be read."""
    def trust_ours_only(model_dir: Path) -> None:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
        mlmodel["flavors"]["sklearn"]["skops_trusted_types"] = list(TRUSTED_TYPES)
        (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return relogged(trusting_system(fitted), trust_ours_only)


def with_other_cleaning(version: ModelVersion) -> ModelVersion:
    """One of our versions, but logged with a `text_cleaning.py` that differs from this checkout's."""
    def edit_cleaning(model_dir: Path) -> None:
        with (model_dir / "code" / "text_cleaning.py").open("a") as code:
            code.write("\nNEGATIONS_KEPT = False  # an edit made after this checkout\n")
    return relogged(version, edit_cleaning)


def garbled(version: ModelVersion) -> ModelVersion:
    """One of our versions whose skops file was overwritten with bytes skops cannot read."""
    def overwrite(model_dir: Path) -> None:
        (model_dir / "model.skops").write_bytes(b"PK\x03\x04 not really a zip")
    return relogged(version, overwrite)


def malformed(version: ModelVersion) -> ModelVersion:
    """One of our versions whose MLmodel has a list where the sklearn flavour's settings belong."""
    def listify(model_dir: Path) -> None:
        mlmodel = yaml.safe_load((model_dir / "MLmodel").read_text())
        mlmodel["flavors"]["sklearn"] = ["skops"]
        (model_dir / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return relogged(version, listify)


def pickled(fitted: Pipeline) -> ModelVersion:
    mlflow.set_experiment("crafted")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(fitted, name="model", serialization_format="cloudpickle",
                                        pip_requirements=REQUIREMENTS)
    return mlflow.register_model(info.model_uri, MODEL_NAME)


def relogged(version: ModelVersion, edit: Callable[[Path], None]) -> ModelVersion:
    """A new version holding `version`'s files after `edit` changed them."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}",
                                                             dst_path=tmp))
        edit(model_dir)
        mlflow.set_experiment("crafted")
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(model_dir), "model")
    return mlflow.register_model(f"runs:/{run.info.run_id}/model", MODEL_NAME)
