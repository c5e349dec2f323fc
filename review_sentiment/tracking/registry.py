"""Registry queries: creating versions and finding them by tag or alias."""
from __future__ import annotations

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from review_sentiment.constants import BEST_PARAMS_ARTIFACT, CHAMPION


def register(model_info: ModelInfo, name: str, tags: dict[str, object]) -> ModelVersion:
    """The version of `name` holding this logged model: created with its tags the first time, and the
    same one again when a retried step registers it again (one logged model, one version)."""
    made = mlflow.MlflowClient().search_model_versions(f"name='{name}' and run_id='{model_info.run_id}'")
    for version in sorted(made, key=lambda v: int(v.version)):
        if version.source == model_info.model_uri:
            return version
    return mlflow.register_model(model_info.model_uri, name, tags={k: str(v) for k, v in tags.items()})


def versions_tagged(name: str, **tags: str) -> list[ModelVersion]:
    """The versions of `name` whose tags include all of `tags`."""
    return [v for v in mlflow.MlflowClient().search_model_versions(f"name='{name}'")
            if all(v.tags.get(k) == value for k, value in tags.items())]


def latest_version(name: str, **tags: str) -> ModelVersion | None:
    return max(versions_tagged(name, **tags), key=lambda v: int(v.version), default=None)


def best_tuned_params(name: str, family: str) -> tuple[dict, ModelVersion] | None:
    """The tuning script's best configuration for `family` (by CV F1) among registered versions."""
    tuned = versions_tagged(name, source="tuning", family=family)
    if not tuned:
        return None
    best = max(tuned, key=lambda v: float(v.tags["cv_f1_macro"]))
    return mlflow.artifacts.load_dict(f"runs:/{best.run_id}/{BEST_PARAMS_ARTIFACT}"), best


def current_champion(name: str) -> ModelVersion | None:
    return version_by_alias(name, CHAMPION)


def version_by_alias(name: str, alias: str) -> ModelVersion | None:
    """The version holding `alias`, or None when no version (or no model `name`) has it."""
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as err:
        if err.error_code in {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), "INVALID_PARAMETER_VALUE"}:
            return None
        raise
