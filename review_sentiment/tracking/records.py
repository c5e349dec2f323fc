"""What a registered version records about itself and about the decision on it, as registry tags.

Stages read these through the dataclasses here, never by tag name: `VersionRecord` (how the model was
made: family, lineage, data, fingerprint, its own test F1) and `Decision` (what promotion decided and on
which evidence). Versions registered before records existed parse as far as their tags go.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from mlflow.entities.model_registry import ModelVersion

UNKNOWN = "unknown"  # a family or source a version registered before records did not record
PROMOTION_TAG = "promotion"  # the decision in words; a version without it has no decision yet
DECISION_TAG = "promotion_record"  # the decision's figures (JSON)


def run_id_of(version: ModelVersion) -> str:
    """The run that logged the version's model. MLflow types `run_id` as optional (a version can be made
    from a model no run logged); every version here is registered from a run's logged model."""
    return cast(str, version.run_id)


@dataclass(frozen=True)
class Lineage:
    """The reviews a line of models is trained and judged on: one CSV read one way, and the seeded
    held-out slice of it (see `data.reviews.held_out`) that no model of the line trains on."""

    data: str  # the CSV's absolute path
    text_col: str
    rating_col: str
    held_out: float
    seed: int

    @classmethod
    def of(cls, data: str | Path, text_col: str, rating_col: str, held_out: float, seed: int) -> Lineage:
        return cls(str(Path(data).resolve()), text_col, rating_col, float(held_out), int(seed))


@dataclass(frozen=True)
class VersionRecord:
    """How a version's model was made. `test_f1` is always its macro-F1 on its own test split (its
    lineage's held-out slice); comparisons with other models live in its `Decision`."""

    family: str
    source: str  # "tuning" or "retrain"
    lineage: Lineage | None  # None: registered before lineages were recorded
    data_digest: str  # the rows the model was fitted on
    reviews_digest: str  # the lineage file's reviews (the tuned parameters of the same data are found by it)
    fingerprint: str  # data + parameters + seed + model code: an identical model has the same one
    test_f1: float | None
    run_id: str
    cv_f1: float | None = None  # tuning only
    feedback_rows: int = 0

    def tags(self) -> dict[str, str]:
        tags = {"family": self.family, "source": self.source, "data_digest": self.data_digest,
                "reviews_digest": self.reviews_digest, "fingerprint": self.fingerprint, "run_id": self.run_id,
                "feedback_rows": str(self.feedback_rows)}
        if self.test_f1 is not None:
            tags["test_f1"] = f"{self.test_f1:.4f}"
        if self.cv_f1 is not None:
            tags["cv_f1_macro"] = f"{self.cv_f1:.4f}"
        if self.lineage is not None:
            tags |= {f"lineage.{k}": str(v) for k, v in asdict(self.lineage).items()}
        return tags

    @classmethod
    def of(cls, version: ModelVersion) -> VersionRecord:
        tags = version.tags
        lineage = None
        if "lineage.data" in tags:
            lineage = Lineage(tags["lineage.data"], tags["lineage.text_col"], tags["lineage.rating_col"],
                              float(tags["lineage.held_out"]), int(tags["lineage.seed"]))
        return cls(family=tags.get("family", UNKNOWN), source=tags.get("source", UNKNOWN), lineage=lineage,
                   data_digest=tags.get("data_digest", ""), reviews_digest=tags.get("reviews_digest", ""),
                   fingerprint=tags.get("fingerprint", ""), test_f1=_number(tags.get("test_f1")),
                   run_id=tags.get("run_id", version.run_id or ""), cv_f1=_number(tags.get("cv_f1_macro")),
                   feedback_rows=int(tags.get("feedback_rows", 0)))


@dataclass(frozen=True)
class Score:
    """Both models' macro-F1 on the same reviews, unseen by either, and the paired bootstrap 95%
    interval of the difference (candidate minus incumbent)."""

    evidence: str  # "protected set" or "trusted feedback"
    reviews: int
    candidate_f1: float
    incumbent_f1: float
    low: float
    high: float
    digest: str  # of the reviews and labels compared

    def __str__(self) -> str:
        return (f"{self.candidate_f1:.4f} vs {self.incumbent_f1:.4f} on {self.reviews} {self.evidence} reviews "
                f"(difference 95% CI {self.low:+.4f} to {self.high:+.4f})")


@dataclass(frozen=True)
class Decision:
    """What promotion decided about a version, against which incumbent, on which evidence."""

    promoted: bool
    reason: str
    incumbent: str | None  # the version it was compared with
    protected: Score | None = None
    feedback: Score | None = None

    def tags(self) -> dict[str, str]:
        figures = {"promoted": self.promoted, "incumbent": self.incumbent,
                   "protected": None if self.protected is None else asdict(self.protected),
                   "feedback": None if self.feedback is None else asdict(self.feedback)}
        return {PROMOTION_TAG: self.reason[:4900], DECISION_TAG: json.dumps(figures)}

    @classmethod
    def of(cls, version: ModelVersion) -> Decision | None:
        """The decision recorded on a version; None while it has none."""
        reason = version.tags.get(PROMOTION_TAG)
        if reason is None:
            return None
        figures = json.loads(version.tags.get(DECISION_TAG, "{}"))
        scores = {k: None if figures.get(k) is None else Score(**figures[k]) for k in ("protected", "feedback")}
        return cls(bool(figures.get("promoted", False)), reason, figures.get("incumbent"), **scores)


def _number(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)
