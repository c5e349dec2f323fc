"""`models:/` references: the one parser of them in the project, so the service, batch scoring and
the CLIs accept and reject exactly the same strings."""
from __future__ import annotations

import re
from dataclasses import dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion

from review_sentiment.tracking.registry import version_by_alias

_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))")


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
        assert self.version is not None  # `parse` gives an alias or a version
        return mlflow.MlflowClient().get_model_version(self.name, self.version)

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"
