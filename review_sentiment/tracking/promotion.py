"""The one rule that decides whether a model replaces another, and the compare-and-set that moves
`champion`. The tuning run (between its families, then against the champion), every retrain and the
decisions left pending by a killed command all decide through `judge`.

The rule: both models are scored on the same labelled reviews that neither trained on — the lineage's
protected set (the held-out slice of the file the lineage trains on) and, where there are enough of
them, trusted fed-back labels held out the same way. A candidate worse on the protected set beyond noise
(the paired bootstrap 95% interval of the macro-F1 difference lies below zero) loses, whatever feedback
says. Otherwise it wins if its macro-F1 is higher on the trusted feedback when that can judge, else on
the protected set; a tie keeps the incumbent. A candidate trained on another file than the champion's
lineage does not compete without `allow_new_data`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from review_sentiment.constants import CHAMPION
from review_sentiment.data.reviews import ReviewDataError, Reviews, held_out, load_reviews, review_hashes
from review_sentiment.modeling.metrics import MIN_LABELLED, judgeable, label_codes, macro_f1, macro_f1_of_codes
from review_sentiment.tracking.alias_lock import alias_lock
from review_sentiment.tracking.model_loading import RefusedModel, load_pipeline
from review_sentiment.tracking.model_logging import training_reviews
from review_sentiment.tracking.orphans import writer_may_be_alive
from review_sentiment.tracking.records import Decision, Lineage, Score, VersionRecord, run_id_of
from review_sentiment.tracking.registry import current_champion, lineage_of

MIN_COMPARED_REVIEWS = MIN_LABELLED  # fewer reviews than this (or one label only) judges nothing
BOOTSTRAP_RESAMPLES = 1000
PROTECTED, FEEDBACK = "protected set", "trusted feedback"
PENDING_GRACE_SECONDS = 900  # a version registered on another host is left to its command this long


@dataclass(frozen=True)
class Evidence:
    """Labelled reviews two models are judged on, and what they are."""

    name: str
    texts: pd.Series
    labels: np.ndarray

    @classmethod
    def of(cls, name: str, texts: Sequence[str] | pd.Series, labels: Sequence[int] | np.ndarray) -> Evidence:
        return cls(name, pd.Series(list(texts), dtype=object), np.asarray(labels, dtype=int))

    def unseen_by(self, seen: np.ndarray | None) -> Evidence:
        """Without the reviews whose hashes are in `seen` (a model's training reviews; None: unknown)."""
        if seen is None or not len(self.texts):
            return self
        keep = ~np.isin(review_hashes(self.texts), seen)
        return replace(self, texts=self.texts[keep].reset_index(drop=True), labels=self.labels[keep])

    @property
    def judges(self) -> bool:
        return judgeable(self.labels)

    @property
    def digest(self) -> str:
        digest = hashlib.sha256(review_hashes(self.texts).tobytes())
        digest.update(self.labels.astype(np.int8).tobytes())
        return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Verdict:
    wins: bool
    why: str
    protected: Score
    feedback: Score | None


def score(evidence: Evidence, candidate_said: np.ndarray, incumbent_said: np.ndarray, seed: int = 0) -> Score:
    """Both models' macro-F1 on `evidence` and the paired bootstrap interval of their difference."""
    from scipy import stats  # here: ~0.45 s of imports a tuning run needs only once its models are made

    truth = evidence.labels
    interval = stats.bootstrap(  # resampling the reviews' label codes is the paired bootstrap of the labels
        (label_codes(truth, candidate_said, incumbent_said),),
        lambda codes, axis: macro_f1_of_codes(codes, 0, 2, axis) - macro_f1_of_codes(codes, 1, 2, axis),
        vectorized=True, method="percentile", n_resamples=BOOTSTRAP_RESAMPLES, batch=100,
        rng=np.random.default_rng(seed)).confidence_interval
    return Score(evidence.name, len(truth), macro_f1(truth, candidate_said), macro_f1(truth, incumbent_said),
                 float(interval.low), float(interval.high), evidence.digest)


def judge(protected: Score, feedback: Score | None) -> Verdict:
    """The rule (see the module's docstring) on two scores of the same pair of models."""
    if protected.high < 0:
        return Verdict(False, f"worse on the {PROTECTED} beyond noise: {protected}", protected, feedback)
    deciding = feedback if feedback is not None else protected
    also = f"; {PROTECTED}: {protected}" if feedback is not None else ""
    if deciding.candidate_f1 > deciding.incumbent_f1:
        return Verdict(True, f"better on the {deciding.evidence}: {deciding}{also}", protected, feedback)
    how = "a tie keeps the incumbent" if deciding.candidate_f1 == deciding.incumbent_f1 else "lower"
    return Verdict(False, f"not better on the {deciding.evidence} ({how}): {deciding}{also}", protected, feedback)


@dataclass(frozen=True)
class Promotion:
    """Whether `champion` moved to the candidate, why (printed and recorded as-is), and which version
    held the alias when this promotion finished."""

    promoted: bool
    reason: str
    champion: str


def promote_if_better(name: str, candidate: ModelVersion, protected: Evidence, feedback: Evidence | None = None,
                      *, allow_new_data: bool = False, unlocked: bool = False) -> Promotion:
    """Decide `candidate` against the current champion by the rule and record the decision on it;
    `protected` and `feedback` are the candidate lineage's held-out reviews. A champion this code
    refuses to load (foreign types, other cleaning) cannot be judged here, so it is replaced."""
    version = str(candidate.version)
    while True:
        champion = current_champion(name)
        if champion is None:
            decision = Decision(True, f"v{version} is the first champion", None)
        elif str(champion.version) == version:  # a retried step, or a reused version: its decision stands
            if (decided := Decision.of(candidate)) is None:  # lost between moving the alias and recording it
                record(name, version, decided := Decision(True, f"v{version} is already the champion", version))
            return Promotion(True, decided.reason, version)
        else:
            decision = _against(candidate, champion, protected, feedback, allow_new_data)
        incumbent = None if champion is None else str(champion.version)
        if decision.promoted and incumbent != version and not _move_alias(name, version, incumbent, unlocked):
            continue  # the champion moved meanwhile: judge against the new one
        record(name, version, decision)
        return Promotion(decision.promoted, decision.reason, version if decision.promoted else str(incumbent))


def record(name: str, version: str, decision: Decision) -> None:
    client = mlflow.MlflowClient()
    for key, value in decision.tags().items():
        client.set_model_version_tag(name, version, key, value)


def _against(candidate: ModelVersion, champion: ModelVersion, protected: Evidence, feedback: Evidence | None,
             allow_new_data: bool) -> Decision:
    version, held = str(candidate.version), str(champion.version)
    try:
        champion_model = load_pipeline(champion)
    except RefusedModel as refused:
        return Decision(True, f"v{version} promoted: the champion is refused here ({refused})", held)
    ours, theirs = lineage_of(candidate), lineage_of(champion)
    if ours is not None and theirs is not None and ours.data != theirs.data and not allow_new_data:
        return Decision(False, f"v{version} not promoted: trained on {ours.data}, champion v{held} on {theirs.data} "
                               f"(--allow-new-data lets a model of other data compete)", held)
    seen = [training_reviews(run_id_of(v)) for v in (champion, candidate)]
    protected = protected.unseen_by(seen[0]).unseen_by(seen[1])
    feedback = None if feedback is None else feedback.unseen_by(seen[0]).unseen_by(seen[1])
    if not protected.judges:
        return Decision(False, f"v{version} not promoted: fewer than {MIN_COMPARED_REVIEWS} {PROTECTED} reviews "
                               f"of both labels left unseen by champion v{held}", held)
    candidate_model = load_pipeline(candidate)
    scores = {e.name: score(e, candidate_model.predict(e.texts), champion_model.predict(e.texts))
              for e in (protected, feedback) if e is not None and e.judges}
    verdict = judge(scores[PROTECTED], scores.get(FEEDBACK))
    word = "promoted" if verdict.wins else "not promoted"
    return Decision(verdict.wins, f"v{version} {word} over champion v{held}: {verdict.why}", held,
                    verdict.protected, verdict.feedback)


def _move_alias(name: str, version: str, expected: str | None, unlocked: bool) -> bool:
    """Compare-and-set: point `champion` at `version` if it still points at `expected` (None: unset)."""
    with alias_lock(name, unlocked):
        current = current_champion(name)
        if (None if current is None else str(current.version)) != expected:
            return False
        mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)
        return True


def protected_set(reviews: Reviews, lineage: Lineage) -> Evidence:
    """The lineage's held-out slice of `reviews` (the lineage file's reviews): what no model of it trains on."""
    held = held_out(reviews.text, lineage.held_out, lineage.seed)
    return Evidence.of(PROTECTED, reviews.text[held], reviews.label.to_numpy()[held])


def decide_pending(name: str, *, unlocked: bool = False, except_runs: Collection[str] = ()) -> list[str]:
    """Decide, oldest first, the versions registered without a decision whose command is gone (killed
    between registering and promoting): each against the champion by the rule, on its lineage's
    protected set (their feedback evidence went with the command). Left alone: versions of runs in
    `except_runs` (the caller's own), of a live process on this host, or registered on another host
    less than `PENDING_GRACE_SECONDS` ago (its process cannot be checked from here). A line per version."""
    lines = []
    for version in sorted(mlflow.MlflowClient().search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        made = VersionRecord.of(version)
        if made.lineage is None or Decision.of(version) is not None or made.run_id in except_runs:
            continue  # registered before lineages, decided, or the caller's own
        try:
            if writer_may_be_alive(made.run_id, version.creation_timestamp / 1000, PENDING_GRACE_SECONDS):
                continue
            reviews = load_reviews(made.lineage.data, made.lineage.text_col, made.lineage.rating_col)
            promotion = promote_if_better(name, version, protected_set(reviews, made.lineage), unlocked=unlocked)
        except RefusedModel as refused:  # it can never be judged here: say so once, for good
            record(name, str(version.version), Decision(False, f"v{version.version} not promoted: {refused}", None))
            lines.append(f"v{version.version} cannot be judged here: {refused}")
            continue
        except (ReviewDataError, MlflowException) as err:
            lines.append(f"v{version.version} left undecided: {str(err).splitlines()[0]}")
            continue
        lines.append(f"Decided v{version.version}, registered by a command that did not finish: {promotion.reason}")
    return lines
