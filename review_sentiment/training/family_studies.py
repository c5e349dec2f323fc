"""Which Optuna studies a tuning command works on, so that rerunning it resumes and workers anywhere
find the same ones.

A command's key is a digest of what decides its results (the reviews, the columns, the families,
trials, folds, test share, seed, experiment and model name). Its studies are named
`<family>-<key>-<attempt>`; each remembers its MLflow parent run and, once registered, its version.
An attempt ends when the champion decision is made: rerunning a finished command starts attempt + 1
(a fresh search, as before studies were stored); rerunning an unfinished one resumes it.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna

from review_sentiment.training.study import Storage, pruner, sampler
from review_sentiment.training.trial_queue import finished_by_workers, set_trial_budget

PARENT_RUN, VERSION, DONE = "mlflow_parent_run_id", "registered_version", "attempt_done"


@dataclass(frozen=True)
class FamilyStudy:
    family: str
    study: optuna.Study
    parent_run_id: str
    resumed: bool
    finished_before: int = 0  # resumed: the trials that had run to an end before this command's workers started

    @property
    def version(self) -> str | None:
        return self.study.user_attrs.get(VERSION)

    def finished_trials(self, before: datetime.datetime) -> int:
        """Trials that ran to an end before `before` (a naive local time, as Optuna's)."""
        return sum(trial.datetime_complete is not None and trial.datetime_complete < before
                   for trial in finished_by_workers(self.study))


def command_key(**decisive: object) -> str:
    return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:12]


def open_attempt(storage: Storage, key: str, families: Sequence[str], trials: int, seed: int, shared: bool,
                 new_parent_run: Callable[[str, str], str]) -> list[FamilyStudy]:
    """Resume this command's unfinished attempt, or start the next one: one study per family, its
    budget of trials set, its parent run made by `new_parent_run(family, study_name)`."""
    latest, free = _attempts(storage, key, families)
    if latest and (resumed := _load(storage, key, families, latest, seed, shared)) is not None:
        return resumed
    studies = []
    for family in families:
        name = _name(family, key, free)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                    sampler=sampler(seed, shared), pruner=pruner())
        set_trial_budget(study, trials)
        study.set_user_attr(PARENT_RUN, new_parent_run(family, name))  # last: with it, the study is ready
        studies.append(FamilyStudy(family, study, study.user_attrs[PARENT_RUN], resumed=False))
    return studies


def open_studies_to_join(storage: Storage, key: str, families: Sequence[str],
                         seed: int) -> list[FamilyStudy] | None:
    """The unfinished attempt of this command, for a worker that joins it; None if there is none."""
    latest, _ = _attempts(storage, key, families)
    return _load(storage, key, families, latest, seed, shared=True) if latest else None


def finish_attempt(studies: Sequence[FamilyStudy]) -> None:
    for family_study in studies:
        family_study.study.set_user_attr(DONE, True)


def _load(storage: Storage, key: str, families: Sequence[str], attempt: int, seed: int,
          shared: bool) -> list[FamilyStudy] | None:
    studies = [optuna.load_study(study_name=_name(family, key, attempt), storage=storage,
                                 sampler=sampler(seed, shared), pruner=pruner()) for family in families]
    if any(study.user_attrs.get(DONE) or PARENT_RUN not in study.user_attrs for study in studies):
        return None  # finished, or still being made (a worker waits; a killed start is not resumed)
    return [FamilyStudy(family, study, study.user_attrs[PARENT_RUN], resumed=True)
            for family, study in zip(families, studies, strict=True)]


def _attempts(storage: Storage, key: str, families: Sequence[str]) -> tuple[int | None, int]:
    """The latest attempt with a study for every family (None if none), and the next free number: a
    start killed while creating its studies leaves an incomplete set, which is never resumed."""
    names = set(optuna.get_all_study_names(storage))
    attempts = {int(m.group(1)) for n in names if (m := re.fullmatch(rf"{re.escape(families[0])}-{key}-(\d+)", n))}
    complete = [a for a in attempts if all(_name(f, key, a) in names for f in families)]
    return max(complete, default=None), max(attempts, default=0) + 1


def _name(family: str, key: str, attempt: int) -> str:
    return f"{family}-{key}-{attempt}"
