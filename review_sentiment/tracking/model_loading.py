"""Loading a registered version without trusting its artifact.

`mlflow.sklearn.load_model` lets the artifact decide: skops trusts whatever types the MLmodel file
lists, and `code_paths` puts the artifact's code first on `sys.path`. Anyone who can point an alias at
a crafted version could then run code in the service, the batch scorer and promotion. Here the skops
file is loaded with the trusted types defined in our code, nothing of the artifact is imported, and a
version is refused, with a one-line reason, when:
- it is not a skops-saved sklearn model (a pickle runs code as it loads);
- its MLmodel or its skops file asks for any type beyond `model_logging.TRUSTED_TYPES`;
- its cleaning (the `text_cleaning.py` and stopword list logged with it) differs from the cleaning this
  process runs: skops resolves `text_cleaning.clean_texts` to our module, so a model trained with other
  cleaning would silently score with ours (train/serve skew). We refuse rather than import its copy,
  which would replace ours for every other model in the process.
"""
from __future__ import annotations

import tempfile
import tokenize
from pathlib import Path

import mlflow
import yaml
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline

from review_sentiment.modeling.calibration import ARTIFACT as CALIBRATION_ARTIFACT
from review_sentiment.modeling.calibration import Calibration
from review_sentiment.tracking.model_logging import (
    CLEANING_DIGEST_TAG,
    SAME_CLEANING_AS,
    TRUSTED_TYPES,
    cleaning_digest,
)
from review_sentiment.tracking.records import run_id_of


class RefusedModel(ValueError):
    """A registered version this project will not load; the message says why, in one line."""


def load_pipeline(version: ModelVersion) -> Pipeline:
    """The fitted pipeline of `version`, or RefusedModel."""
    import skops.io  # here, not at the top: it imports every sklearn estimator (~0.75 s) that a run needs only now

    with tempfile.TemporaryDirectory() as tmp:
        model_file = _checked_model_file(version, Path(tmp))
        try:
            pipeline = skops.io.load(model_file, trusted=list(TRUSTED_TYPES))
        except Exception as err:  # noqa: BLE001 — whatever a malformed file raises, it is refused in one line
            raise RefusedModel(f"{version.name} v{version.version}: its model file does not load ({err})") from None
    if not isinstance(pipeline, Pipeline):
        raise RefusedModel(f"{version.name} v{version.version}: holds a {type(pipeline).__name__}, not a pipeline")
    return pipeline


def load_calibration(version: ModelVersion) -> Calibration | None:
    """The version's calibration; None for one logged before calibration. One that is there but not a
    calibration this code wrote is refused like a crafted model (plain numbers cannot run code, but a
    NaN or out-of-order one would give every answer a wrong or missing probability)."""
    if not any(f.path == CALIBRATION_ARTIFACT for f in mlflow.MlflowClient().list_artifacts(run_id_of(version))):
        return None
    try:
        return Calibration.from_dict(mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{CALIBRATION_ARTIFACT}"))
    except ValueError as err:
        where = f"{version.name} v{version.version}"
        raise RefusedModel(f"{where}: its {CALIBRATION_ARTIFACT} is unusable ({err})") from None


def _checked_model_file(version: ModelVersion, tmp: Path) -> Path:
    """The version's files downloaded under `tmp` and checked; the path of its skops file."""
    import skops.io  # see load_pipeline

    where = f"{version.name} v{version.version}"
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}", dst_path=str(tmp)))
    try:
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["sklearn"]
        trusted, pickled = flavor.get("skops_trusted_types") or [], flavor.get("pickled_model")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise RefusedModel(f"{where}: not a logged sklearn model ({type(err).__name__}: {err})") from None
    if not (isinstance(trusted, list) and isinstance(pickled, str)):
        raise RefusedModel(f"{where}: its MLmodel is malformed (skops_trusted_types {trusted!r}, "
                           f"pickled_model {pickled!r})")
    if flavor.get("serialization_format") != "skops":
        raise RefusedModel(f"{where}: saved as {flavor.get('serialization_format')!r}, not skops "
                           f"(a pickle runs code as it loads)")
    asked = set(map(str, trusted)) - set(TRUSTED_TYPES)
    if asked:
        raise RefusedModel(f"{where}: its MLmodel asks to trust {', '.join(sorted(asked))}; "
                           f"only {', '.join(TRUSTED_TYPES)} is trusted")
    model_file = (local / pickled).resolve()
    if local.resolve() not in model_file.parents or not model_file.is_file():
        raise RefusedModel(f"{where}: its model file {pickled!r} is missing")
    try:
        holds = set(skops.io.get_untrusted_types(file=model_file)) - set(TRUSTED_TYPES)
    except Exception as err:  # noqa: BLE001 — a file skops cannot even read is refused, whatever it raised
        raise RefusedModel(f"{where}: its model file is not a skops file ({type(err).__name__}: {err})") from None
    if holds:
        raise RefusedModel(f"{where}: its model file holds types we do not trust: {', '.join(sorted(holds))}")
    try:
        theirs = cleaning_digest(local / "code")
    except (OSError, SyntaxError, tokenize.TokenError):
        raise RefusedModel(f"{where}: it carries no cleaning code to check ours against") from None
    ours = cleaning_digest()
    if theirs not in SAME_CLEANING_AS | {ours} or version.tags.get(CLEANING_DIGEST_TAG, theirs) != theirs:
        raise RefusedModel(f"{where}: it was trained with other cleaning code (digest {theirs}, this process "
                           f"runs {ours}); scoring it here would skew its predictions")
    return model_file
