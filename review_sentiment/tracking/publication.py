"""A fitted model's publication: its two figures, the model itself, and the registered version.

After the fit this is the slowest part of a release: ~0.5 s a model (drawing and saving the figures,
skops writing the model and MLflow loading it back to check it), and ~2 s once a process (importing
skops, which imports all of sklearn, and matplotlib; MLflow's scan of every installed package to check
the pinned requirements). It needs nothing the next family's trials need, so the tuning command has a
process of its own publish while those trials run (`publisher`; the writer process did before): on the
published pipeline's reviews (2 cores, fresh store) the run went from 12.2 s to 10.6-11.2 s (medians,
paired with the commit before), 10.3 s against the published loop's 20.7 s in `benchmarks/bench_full_run.py`.
Everywhere else, and whenever the publisher could not, the process that fitted the model publishes it
(`publish`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline

from review_sentiment.processes import collector_paused
from review_sentiment.tracking.model_logging import log_sentiment_model, model_size_bytes
from review_sentiment.tracking.registry import register
from review_sentiment.tracking.reports import confusion_figure, reliability_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Publication:
    """What a fitted and judged model's run still gets, and the version it becomes."""

    run_id: str  # the run it was fitted in, which holds its metrics already
    name: str  # the registered model
    family: str
    pipeline: Pipeline
    example_texts: list[str]  # the logged model's input example
    y_test: np.ndarray  # the held-out slice's labels, and what the model said of it
    test_pred: np.ndarray
    test_probability: np.ndarray
    calibration: str  # the calibration's method, named on the reliability diagram
    tags: dict[str, str]  # the version's record (`VersionRecord.tags`)


def publish(publication: Publication) -> ModelVersion:
    """Log the figures and the model to the publication's run and register the model with its tags. The run
    is named, not made active: its status stays as the process that fitted the model left it (a command
    killed meanwhile leaves no run RUNNING but its own)."""
    p, client = publication, mlflow.MlflowClient()
    _log_figure(client, p.run_id, reliability_figure(p.y_test, p.test_probability,
                                                     f"{p.family} (test), {p.calibration}"), "reliability_diagram.png")
    _log_figure(client, p.run_id, confusion_figure(p.y_test, p.test_pred, f"{p.family} (test)"), "confusion_matrix.png")
    model_info = log_sentiment_model(p.pipeline, p.example_texts, run_id=p.run_id)
    client.log_metric(p.run_id, "model_size_bytes", model_size_bytes(model_info))
    if client.get_run(p.run_id).info.lifecycle_stage == "deleted":  # taken back meanwhile (a failed command)
        raise RunTakenBack(f"run {p.run_id} was deleted while its model was published: not registered")
    return register(model_info, p.name, p.tags)


def published_now(publication: Publication) -> Callable[[], ModelVersion | None]:
    """`publish`, here and at once, as a publisher that hands the work elsewhere gives its answer."""
    version = publish(publication)
    return lambda: version


class RunTakenBack(RuntimeError):
    """The run a model was being published into was deleted meanwhile."""


def import_ahead() -> None:
    """What the first `publish` of a process imports and scans (~1 s beyond sklearn and MLflow), done ahead
    by the publisher process (`publisher`) while it has nothing to publish yet."""
    with collector_paused():
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401
        import mlflow.sklearn  # noqa: F401
        import skops.io  # noqa: F401
        from mlflow.utils import requirements_utils

        # MLflow 3.17 maps every installed distribution to its modules (~0.5 s) at a model's first requirement
        # check; a release that no longer has this private function just pays it at the first publish
        if (scan := getattr(requirements_utils, "_init_modules_to_packages_map", None)) is not None:
            scan()


def _log_figure(client: mlflow.MlflowClient, run_id: str, figure: Figure, name: str) -> None:
    """Log a figure and close it: sklearn's displays draw through pyplot, which keeps every figure open."""
    import matplotlib.pyplot as plt

    client.log_figure(run_id, figure, name)
    plt.close(figure)
