"""Registry queries: creating versions and finding them by tag or alias."""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from review_sentiment.constants import BEST_PARAMS_ARTIFACT, CHAMPION, DEFAULT_RATING_COL, DEFAULT_TEXT_COL
from review_sentiment.modeling.calibration import FOLDS
from review_sentiment.tracking.model_logging import CLEANING_DIGEST_TAG, cleaning_digest
from review_sentiment.tracking.records import Lineage, VersionRecord, run_id_of


def register(model_info: ModelInfo, name: str, tags: Mapping[str, object]) -> ModelVersion:
    """The version of `name` holding this logged model: created with its tags the first time, and the
    same one again when a retried step registers it again (one logged model, one version), or when the
    run has a version of the same fingerprint (a rerun of a killed command publishing the model its dead
    publisher was still publishing). Every version records the digest of the cleaning it was trained with,
    which loading holds it to."""
    fingerprint = str(tags.get("fingerprint") or "")
    for version in registered_from(model_info.run_id, name):
        if version.source == model_info.model_uri or (fingerprint and _fingerprint(version) == fingerprint):
            return version
    tags = {**tags, CLEANING_DIGEST_TAG: cleaning_digest()}
    # MLflow logs "Waiting up to 300 seconds for model version to finish creation" for every version,
    # ready or not (mlflow 3.x, AbstractStore._await_model_version_creation_impl): not news to a user.
    waiting = logging.getLogger("mlflow.store.model_registry.abstract_store")
    level = waiting.level
    waiting.setLevel(logging.WARNING)
    try:
        return mlflow.register_model(model_info.model_uri, name, tags={k: str(v) for k, v in tags.items()})
    finally:
        waiting.setLevel(level)


def registered_from(run_id: str, name: str | None = None, fingerprint: str | None = None) -> list[ModelVersion]:
    """The versions registered from a run (of `name`, or of any registered model; with `fingerprint`, those
    holding that model), oldest first."""
    query = f"run_id='{run_id}'" + ("" if name is None else f" and name='{name}'")
    made = sorted(mlflow.MlflowClient().search_model_versions(query), key=lambda v: int(v.version))
    return [v for v in made if fingerprint is None or _fingerprint(v) == fingerprint]


def _fingerprint(version: ModelVersion) -> str:
    return VersionRecord.of(version).fingerprint


def records_of(name: str) -> list[tuple[ModelVersion, VersionRecord]]:
    """Every version of `name` with its record."""
    return [(v, VersionRecord.of(v)) for v in mlflow.MlflowClient().search_model_versions(f"name='{name}'")]


@dataclass(frozen=True)
class TunedParams:
    """A tuning run's best configuration, the version that carries it, and why it was the one chosen."""

    params: dict
    version: ModelVersion
    why: str
    folds: int  # the tuning run's CV folds, which its version's calibration was fitted on


def tuned_params(name: str, family: str, reviews_digest: str) -> TunedParams | None:
    """The tuning script's configuration for `family` to reuse on the reviews with `reviews_digest`:
    the best by CV F1 among versions tuned on those same reviews, else the most recent tuning run.
    CV scores on different data do not compare, so the highest one overall means nothing."""
    tuned = [(v, r) for v, r in records_of(name) if r.source == "tuning" and r.family == family]
    same_data = [(v, r) for v, r in tuned if r.reviews_digest == reviews_digest and r.cv_f1 is not None]
    if same_data:
        chosen, best = max(same_data, key=lambda pair: pair[1].cv_f1 or 0.0)
        why = f"tuned on the same data (v{chosen.version}, best CV F1 {best.cv_f1:.4f})"
    elif tuned:
        chosen = max((v for v, _ in tuned), key=lambda v: int(v.version))
        why = f"most recent tuning run (v{chosen.version}); none was tuned on this data"
    else:
        return None
    folds = int(mlflow.MlflowClient().get_run(run_id_of(chosen)).data.params.get("folds", FOLDS))
    return TunedParams(mlflow.artifacts.load_dict(f"runs:/{chosen.run_id}/{BEST_PARAMS_ARTIFACT}"), chosen, why,
                       folds)


def lineage_of(version: ModelVersion) -> Lineage | None:
    """The version's lineage: its record's; for a version registered before lineages were recorded, the
    file its run logged as its training dataset (with the run's seed and test share, the default columns)
    while that file is still there; else None (unknown)."""
    if (recorded := VersionRecord.of(version).lineage) is not None:
        return recorded
    try:
        run = mlflow.MlflowClient().get_run(run_id_of(version))
    except MlflowException:
        return None
    assert run.inputs is not None  # a run read from the tracking store has its inputs (maybe none)
    for used in run.inputs.dataset_inputs:
        if any(tag.value == "training" for tag in used.tags):
            source = json.loads(used.dataset.source or "{}").get("uri", "").split(" + ")[0]  # retrains: "+ feedback"
            if source and Path(source).is_file():
                params = run.data.params
                return Lineage.of(source, DEFAULT_TEXT_COL, DEFAULT_RATING_COL, float(params.get("test_size", 0.3)),
                                  int(params.get("seed", 42)))
    return None


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
