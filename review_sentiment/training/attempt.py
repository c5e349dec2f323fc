"""Resume, workers and undo behind one small interface: what lets a tuning command be killed and run
again, be shared by workers here and elsewhere, and take back everything it wrote when it fails.

    with Attempt(storage, registered_model) as attempt:             # a failure takes back its writes and studies
        with attempt.studies(key, …, workers=…) as studies:          # made or resumed; local workers help
            results = [tune(study) for study in studies]             # recording each write in attempt.writes
        promote(choose(results))                                     # still taken back if this fails

On success the studies are marked finished, so the same command again starts a new attempt.
"""
from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from types import TracebackType

import mlflow
import optuna

from review_sentiment.processes import interrupts_held
from review_sentiment.tracking.orphans import adopt, close_orphaned_runs, closed_orphans_line, live_writer
from review_sentiment.tracking.promotion import decide_pending
from review_sentiment.tracking.undo import TAKING_BACK, Writes, undone_on_failure
from review_sentiment.training.family_studies import FamilyStudy, finish_attempt, open_attempt
from review_sentiment.training.study import Storage, disconnected
from review_sentiment.training.workers import local_workers

log = logging.getLogger(__name__)


def _not_deleted(study_name: str, storage: Storage) -> Exception | None:
    """Delete the study; the error where that failed (the failure that ended the run is the one raised)."""
    try:
        optuna.delete_study(study_name=study_name, storage=storage)
    except Exception as err:  # noqa: BLE001
        return err
    return None


class RunConflict(ValueError):
    """`--join` found no unfinished run of these data and flags, or the same run was started twice."""


class Attempt:
    """One tuning command's attempt at its studies (a rerun of a killed command resumes it)."""

    def __init__(self, storage: Storage, registered_model: str, unlocked_promotion: bool):
        self.storage, self.registered_model, self.unlocked = storage, registered_model, unlocked_promotion
        self.taken: list[FamilyStudy] = []  # ours once opened: a failure deletes them (a rerun starts afresh)
        self._exits = ExitStack()

    def __enter__(self) -> Attempt:
        self.writes: Writes = self._exits.enter_context(undone_on_failure())
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> bool | None:
        if error is None:
            finish_attempt(self.taken)
            return self._exits.__exit__(kind, error, traceback)
        with interrupts_held(TAKING_BACK):
            disconnected(self.storage)
            kept = {name: err for taken in self.taken
                    if (err := _not_deleted(name := taken.study.study_name, self.storage)) is not None}
            said = "; ".join(f"{name}: {err}" for name, err in kept.items())
            if kept and len(kept) == len(self.taken):  # a rerun resumes them: taken back alone, the runs would be
                # deleted under them, so the runs stay too, as a kill leaves both
                log.error("Could not delete the failed run's studies (%s): its runs and versions are left as a kill "
                          "leaves them, and running the command again resumes it", said)
                self.writes.runs.clear()
                self.writes.versions.clear()
            elif kept:  # only a whole set of studies is resumed: the rest are taken back, and a rerun starts afresh
                log.error("Could not delete some of the failed run's studies (%s): they are left, and never resumed",
                          said)
            return self._exits.__exit__(kind, error, traceback)

    @contextmanager
    def studies(self, key: str, models: list[str], trials: int, seed: int, experiment: str,
                new_parent_run: Callable[[str, str, str], str], helpers: Callable[[str], None],
                workers: int) -> Iterator[list[FamilyStudy]]:
        """The command's studies, made or resumed, with `workers - 1` local workers running `helpers`
        beside this process until the block ends. Refuses (RunConflict) a second start of a command
        still running here. Also closes this experiment's orphaned runs and decides versions a killed
        command left undecided (except this attempt's own, decided by the run)."""
        before_workers = datetime.datetime.now()  # a forked worker claims as soon as a resumed study exists
        with local_workers(helpers, workers - 1):
            experiment_id = mlflow.set_experiment(experiment).experiment_id
            made = open_attempt(self.storage, key, models, trials, seed, shared=workers > 1,
                                new_parent_run=lambda family, study: new_parent_run(experiment_id, family, study))
            opened = [replace(it, finished_before=it.finished_trials(before_workers)) if it.resumed else it
                      for it in made]
            _refuse_if_running(opened)
            self.taken = opened
            self._take_over(opened)
            if closed := closed_orphans_line(close_orphaned_runs(experiment)):
                print(closed)
            for line in decide_pending(self.registered_model, unlocked=self.unlocked,
                                       except_runs={s.parent_run_id for s in opened}):
                print(line)
            yield opened

    def _take_over(self, studies: list[FamilyStudy]) -> None:
        """This process now writes the attempt's runs; a failure takes back the whole attempt, the part
        done before a restart included (so a rerun starts afresh rather than from half of it)."""
        for family_study in studies:
            self.writes.runs.append(family_study.parent_run_id)
            if family_study.version is not None:
                self.writes.versions.append(
                    mlflow.MlflowClient().get_model_version(self.registered_model, family_study.version))
            elif family_study.resumed:
                adopt(family_study.parent_run_id)


def _refuse_if_running(studies: list[FamilyStudy]) -> None:
    """The same command started twice on one machine would resume one attempt twice: the second is told
    to join instead (another machine's process cannot be checked from here)."""
    for family_study in studies:
        if family_study.resumed and family_study.version is None and (pid := live_writer(family_study.parent_run_id)):
            raise RunConflict(f"this tuning run is already running here (pid {pid}): add --join to help it, or "
                              f"wait for it to finish")
