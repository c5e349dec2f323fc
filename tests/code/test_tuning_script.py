"""End to end: the tuning script against a real SQLite MLflow store and real Optuna studies."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from review_sentiment.constants import FAMILY_NAMES, MODEL_NAME, TUNING_EXPERIMENT
from review_sentiment.modeling.families import FAMILIES
from review_sentiment.monitoring.profile import PROFILE_ARTIFACT, ReferenceProfile
from tests.helpers import FAST, Store, run_script


def parent_runs() -> pd.DataFrame:
    runs = mlflow.search_runs(experiment_names=[TUNING_EXPERIMENT])
    return runs[runs["tags.mlflow.parentRunId"].isna()].set_index("tags.mlflow.runName")


def test_the_scripts_family_names_are_the_families_defined() -> None:
    """--models offers the names from constants (so --help need not import sklearn): they must be these."""
    assert tuple(FAMILIES) == FAMILY_NAMES


def test_every_family_gets_a_parent_run_with_trials_as_children(tuned: Store) -> None:
    runs = mlflow.search_runs(experiment_names=[TUNING_EXPERIMENT])
    parents = parent_runs()
    assert sorted(parents.index) == sorted(FAMILIES)
    for family, parent in parents.iterrows():
        children = runs[runs["tags.mlflow.parentRunId"] == parent.run_id]
        assert len(children) == 6, family
        complete = children[children["tags.state"] == "COMPLETE"]
        assert len(complete) >= 5 and complete["metrics.cv_f1_macro"].between(0, 1).all()
        assert parent["metrics.cv_f1_macro"] == pytest.approx(complete["metrics.cv_f1_macro"].max())
        for metric in ("train_f1", "test_f1", "fit_time", "model_size_bytes"):
            assert parent[f"metrics.{metric}"] > 0, (family, metric)
        assert parent["params.family"] == family and "params.best_tfidf_min_df" in parent
        assert parent.status == "FINISHED"


def test_parent_runs_carry_dataset_and_artifacts(tuned: Store) -> None:
    client = mlflow.MlflowClient()
    for family, parent in parent_runs().iterrows():
        run = client.get_run(parent.run_id)
        inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
        assert set(inputs) == {"training", "evaluation"} and all(d.digest for d in inputs.values())
        assert inputs["evaluation"].name == "protected set"
        names = {a.path for a in client.list_artifacts(parent.run_id)}
        assert {"confusion_matrix.png", "classification_report.txt", PROFILE_ARTIFACT} <= names
        profile = ReferenceProfile.from_dict(mlflow.artifacts.load_dict(f"runs:/{parent.run_id}/{PROFILE_ARTIFACT}"))
        assert profile.vocabulary and profile.scores and 0 < (profile.positive_label_share or 0) < 1
        terms = json.loads((tuned.path / mlflow.artifacts.download_artifacts(
            run_id=parent.run_id, artifact_path="top_terms.json")).read_text())
        assert len(terms["positive"]) == 20 and terms["positive"][0][1] > 0 > terms["negative"][0][1], family


def test_versions_are_registered_and_the_rule_picks_the_champion(tuned: Store) -> None:
    """Between families the promotion rule decides: the best macro-F1 on the held-out slice (the
    earlier family on a tie); the others record why they were not chosen."""
    client = mlflow.MlflowClient()
    versions = sorted(client.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    assert sorted(v.tags["family"] for v in versions) == sorted(FAMILIES)
    assert all({"cv_f1_macro", "test_f1", "data_digest", "run_id", "promotion"} <= v.tags.keys() for v in versions)
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    best = max(versions, key=lambda v: float(v.tags["test_f1"]))  # max keeps the first of equals
    assert champion.version == best.version
    assert all(f"the tuning run chose {best.tags['family']} v{best.version}" in v.tags["promotion"]
               for v in versions if v.version != best.version)
    assert f"Champion: models:/{MODEL_NAME}@champion = v{champion.version}" in tuned.output
    assert "is the first champion" in tuned.output
    for family in FAMILIES:
        assert f"{family:<18} | CV F1=" in tuned.output


def test_same_seed_same_results_and_no_duplicate_versions(_tuned_once: Store, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's tuning command again, in a copy of its store and studies, gives the same trials and
    models: identical versions are reused, and the champion stays (a tie keeps the incumbent)."""
    _tuned_once.copy_to(tmp_path).activate(monkeypatch)
    shutil.copy(_tuned_once.path / "optuna.journal", tmp_path)  # nothing writes to it any more
    champion = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion")
    again = run_script(FAST + ["--seed", "7"])
    table = lambda out: [line for line in out.splitlines() if "| CV F1=" in line]  # noqa: E731
    assert table(_tuned_once.output) == table(again) and len(table(again)) == len(FAMILIES)
    assert all(f"identical to v{n}, registered before: reused" in again for n in (1, 2, 3)), again
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")) == 3
    assert mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion").version == champion.version


def test_a_pruned_trial_says_so_instead_of_a_cv_score(store: Store) -> None:
    output = run_script(["--trials", "14", "--folds", "4", "--models", "NaiveBayes"])
    lines = [line for line in output.splitlines() if line.startswith("  trial")]
    pruned = [line for line in lines if "pruned" in line]
    runs = mlflow.search_runs(experiment_names=[TUNING_EXPERIMENT])
    assert len(lines) == 14 and len(pruned) == (runs["tags.state"] == "PRUNED").sum() > 0, output
    assert all(re.search(r"pruned after [1-3] folds \(mean F1 so far 0\.\d{4}, below the median\)", line)
               and "cv_f1" not in line for line in pruned), pruned
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    is_pruned = children["tags.state"] == "PRUNED"  # their partial mean is no CV F1: another name, not sortable with it
    assert children.loc[is_pruned, "metrics.cv_f1_macro"].isna().all()
    assert children.loc[is_pruned, "metrics.partial_cv_f1"].between(0, 1).all()
    assert children.loc[~is_pruned, "metrics.cv_f1_macro"].notna().all()
    numbers = [int(line.split()[1]) for line in lines]  # the console's trial numbers are the runs' names
    assert sorted(children["tags.mlflow.runName"].astype(int)) == sorted(numbers) == list(range(1, 15))
