"""Take back what a failed run wrote to MLflow: a failure (or Ctrl-C) half-way must not leave registered
versions without a promotion decision, or FAILED runs beside the good ones.

Versions are deleted from the registry, except one that already holds an alias (a promotion that
finished is kept); a registered model this run created is deleted too if it is left empty. Runs and
their child runs are moved to MLflow's trash (`mlflow gc` purges it), where searches and the UI no
longer show them. If taking back fails as well, that is logged and the original error is raised.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import mlflow
from mlflow.entities.model_registry import ModelVersion

from review_sentiment.databases import store_reconnected
from review_sentiment.processes import interrupts_held
from review_sentiment.tracking.registry import registered_from

log = logging.getLogger(__name__)
TAKING_BACK = "taking back what the failed run wrote"  # what a Ctrl-C held meanwhile is told


@dataclass
class Writes:
    """What a run has written so far; record each write as it happens."""

    runs: list[str] = field(default_factory=list)
    versions: list[ModelVersion] = field(default_factory=list)
    since_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@contextmanager
def undone_on_failure() -> Iterator[Writes]:
    """Yield a record of writes; if the block raises (Ctrl-C included), undo them and re-raise."""
    writes = Writes()
    try:
        yield writes
    except GeneratorExit:  # closed unfinished (collected after its block was never exited): not a failure
        raise
    except BaseException:
        try:
            with interrupts_held(TAKING_BACK):
                store_reconnected()  # a read that Ctrl-C cut short would make its writes fail
                undo(writes)
        except Exception as err:  # noqa: BLE001 — the failure that brought us here is the one to report
            log.error("Could not take back what the failed run wrote (%s): %s", writes, err)
        raise


def undo(writes: Writes) -> None:
    """Delete the versions recorded, and any registered from the runs recorded (the publisher process may have
    registered one the run had not recorded yet), then the runs."""
    client = mlflow.MlflowClient()
    versions = {(v.name, str(v.version)): v for v in writes.versions}
    for run_id in writes.runs:
        versions |= {(v.name, str(v.version)): v for v in registered_from(run_id)}
    for version in versions.values():
        if not client.get_model_version(version.name, version.version).aliases:
            client.delete_model_version(version.name, version.version)
    for name in {version.name for version in versions.values()}:
        model = client.get_registered_model(name)
        if model.creation_timestamp >= writes.since_ms and not client.search_model_versions(f"name='{name}'"):
            client.delete_registered_model(name)
    for run_id in writes.runs:
        run = client.get_run(run_id)
        children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
        for child in children:
            client.delete_run(child.info.run_id)
        client.delete_run(run_id)
