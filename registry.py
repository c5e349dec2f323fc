"""MLflow logging and registry rules shared by the tuning script and the scheduled retrain.

One place decides how a sentiment pipeline is logged (raw text in, cleaning code and stopword
data shipped with it, skops with our one trusted function, explicit requirements), how it is
registered, and when the `champion` alias moves: only to a model at least as good as the current
champion on the same test split.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.types import ColSpec, Schema
from sklearn.pipeline import Pipeline

import text_cleaning
from evaluation import macro_f1

MODEL_NAME = "FlipkartSentimentModel"
CHAMPION = "champion"
CHALLENGER = "challenger"  # the alias the prediction service sends a share of traffic to
MODEL_ARTIFACT = "model"
BEST_PARAMS_ARTIFACT = "best_params.json"
_REQUIREMENTS = ("scikit-learn", "skops", "nltk", "emoji", "pandas", "numpy", "mlflow")
# One unnamed string column: pyfunc then takes a list, a Series, an array or a one-column
# DataFrame (any column name) and every REST payload format, one prediction per review.
SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("long")]))
_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")
_TRUSTED = [f"{text_cleaning.clean_texts.__module__}.{text_cleaning.clean_texts.__qualname__}"]


@dataclass(frozen=True)
class ModelRef:
    """A `models:/` reference: a registered model by alias (which may move) or a fixed version."""

    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        match = _MODELS_URI.fullmatch(uri)
        if not match:
            raise ValueError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return cls(match["name"], match["alias"], match["version"])

    def resolve(self) -> ModelVersion | None:
        """The registry version this reference points at now (None if the alias is unset)."""
        if self.alias:
            return version_by_alias(self.name, self.alias)
        return mlflow.MlflowClient().get_model_version(self.name, self.version)

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class Promotion:
    """Whether `champion` moved to a new version, and why (printed and logged as-is)."""

    promoted: bool
    reason: str


def quiet_mlflow_warnings() -> None:
    """MLflow warns about things our usage gets right (a local CSV as dataset source; an int label
    output in the example's schema): hide those two so users see progress, not noise."""
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")


def as_model_input(texts: Sequence[str] | pd.Series) -> pd.DataFrame:
    """The logged models' input: one string column named 'review'."""
    return pd.DataFrame({text_cleaning.TEXT_COLUMN: list(texts)})


def slim(pipeline: Pipeline) -> Pipeline:
    """Make a fitted pipeline cheap to save: skops writes each numpy-int vocabulary index as its
    own file (3,500 terms: 3 MB, 0.3 s to dump, 0.3 s to load), plain ints go into its JSON; and
    the TF-IDF's record of discarded terms is documented as safe to remove."""
    tfidf = pipeline.named_steps["tfidf"]
    tfidf.vocabulary_ = {term: int(index) for term, index in tfidf.vocabulary_.items()}
    if hasattr(tfidf, "stop_words_"):
        del tfidf.stop_words_
    return pipeline


def model_size_bytes(model_info: ModelInfo) -> int:
    """Bytes of the logged model's files, as the artifact store holds them."""
    files = mlflow.artifacts.list_artifacts(artifact_uri=model_info.model_uri)
    return sum(f.file_size for f in files if not f.is_dir)


@contextmanager
def _cleaning_code() -> Iterator[list[str]]:
    """text_cleaning.py and its stopword data, laid out as in the project so the copy finds it."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(text_cleaning.NLTK_DATA_DIR, data_dir / text_cleaning.NLTK_DATA_DIR.name)
        yield [text_cleaning.__file__, str(data_dir)]


def log_sentiment_model(pipeline: Pipeline, example_texts: Sequence[str]) -> ModelInfo:
    """Log a raw-text pipeline to the active run so pyfunc can load it anywhere, offline."""
    with _cleaning_code() as code_paths:
        return mlflow.sklearn.log_model(
            pipeline,
            name=MODEL_ARTIFACT,
            signature=SIGNATURE,
            input_example=as_model_input(example_texts),
            code_paths=code_paths,
            pip_requirements=[f"{pkg}=={version(pkg)}" for pkg in _REQUIREMENTS],
            serialization_format="skops",
            skops_trusted_types=_TRUSTED,
        )


def register(model_info: ModelInfo, name: str, tags: dict[str, object]) -> ModelVersion:
    """A new version of `name`, created together with its tags."""
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


def promote_if_better(
    name: str, candidate: ModelVersion, candidate_f1: float, X_test: pd.Series, y_test: Sequence[int]
) -> Promotion:
    """Move `champion` to `candidate` if it scores at least the current champion's test macro-F1,
    both measured on this same test split."""
    client = mlflow.MlflowClient()
    champion = current_champion(name)
    if champion is None:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        return Promotion(True, f"v{candidate.version} is the first champion")
    champion_model = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
    champion_f1 = macro_f1(y_test, champion_model.predict(as_model_input(X_test)))
    scores = f"test F1 {candidate_f1:.4f} vs champion v{champion.version} {champion_f1:.4f} on this split"
    if candidate_f1 >= champion_f1:
        client.set_registered_model_alias(name, CHAMPION, candidate.version)
        return Promotion(True, f"v{candidate.version} promoted: {scores}")
    return Promotion(False, f"v{candidate.version} not promoted: {scores}")
