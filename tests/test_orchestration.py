"""The Prefect flows for real (Prefect's test harness; a real local server for the schedule)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy
from prefect.testing.utilities import prefect_test_harness

import registry
from conftest import FAST, PROJECT_DIR, SAMPLE, Store, run_script
from retrain_flow import EXPERIMENT, retrain_logistic
from review_data import ReviewDataError
from score_flow import score_reviews


@pytest.fixture(scope="module", autouse=True)
def prefect_api():
    """One temporary Prefect API for the module: it costs ~15 s to start and stop."""
    with prefect_test_harness():
        yield


def versions() -> list:
    return mlflow.MlflowClient().search_model_versions(f"name='{registry.MODEL_NAME}'")


def orchestration_runs() -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[EXPERIMENT])


def test_retrain_registers_then_skips_unchanged_then_registers_changed(store: Store, tmp_path: Path) -> None:
    first = retrain_logistic(data_path=str(SAMPLE))
    assert first.status == "registered" and first.promoted and first.version == "1"
    run = orchestration_runs().iloc[0]
    assert run["tags.outcome"] == "registered" and run["tags.prefect.flow_run_id"]
    assert run["tags.hyperparameter_source"] == "published defaults"
    assert run["params.model_C"] == "0.5" and run["metrics.test_f1"] == pytest.approx(first.test_f1)
    assert run.status == "FINISHED" and run["tags.data_digest"]

    second = retrain_logistic(data_path=str(SAMPLE))
    assert second.status == "skipped" and "unchanged" in second.message
    assert len(versions()) == 1

    changed = tmp_path / "changed.csv"
    pd.read_csv(SAMPLE).iloc[:-40].to_csv(changed, index=False)
    third = retrain_logistic(data_path=str(changed))
    assert third.status == "registered" and third.version == "2"
    assert {v.tags["source"] for v in versions()} == {"retrain"}
    assert set(orchestration_runs()["tags.outcome"]) == {"registered", "skipped"}


def test_worse_model_is_registered_but_not_promoted(store: Store) -> None:
    good = retrain_logistic(data_path=str(SAMPLE))
    worse = retrain_logistic(data_path=str(SAMPLE), overrides={"tfidf_max_features": 3, "model_C": 0.0001})
    assert worse.status == "registered" and not worse.promoted and worse.test_f1 < good.test_f1
    assert str(registry.current_champion(registry.MODEL_NAME).version) == good.version


def test_uses_the_tuning_scripts_best_logistic_regression(store: Store) -> None:
    run_script(FAST + ["--models", "LogisticRegression", "--trials", "2"])
    outcome = retrain_logistic(data_path=str(SAMPLE))
    tuned = registry.best_tuned_params(registry.MODEL_NAME, "LogisticRegression")
    run = orchestration_runs().iloc[0]
    assert run["tags.hyperparameter_source"] == f"tuned (v{tuned[1].version})"
    assert run["params.model_C"] == str(tuned[0]["model_C"])
    assert outcome.status == "registered"


def test_missing_data_fails_cleanly(store: Store) -> None:
    retrain_logistic(data_path=str(SAMPLE))
    with pytest.raises(ReviewDataError, match="nope.csv: file not found"):
        retrain_logistic(data_path=str(store.path / "nope.csv"))
    assert len(versions()) == 1
    assert "RUNNING" not in set(orchestration_runs().status)


def test_scorer_writes_one_prediction_per_input_row(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ReviewDataError, match="@champion: no version holds that alias yet"):
        score_reviews(str(SAMPLE), str(tmp_path / "early.csv"))
    assert not (tmp_path / "early.csv").exists()
    retrain_logistic(data_path=str(SAMPLE))
    new = tmp_path / "new.csv"
    pd.DataFrame({"Review text": ["Not good at all", None, "Superb laptop 👍", "ok"], "x": range(4)}).to_csv(new, index=False)
    out = tmp_path / "preds.csv"
    assert score_reviews(str(new), str(out)) == 4
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["row_id", "review", "label", "score"]
    assert preds.row_id.tolist() == [0, 1, 2, 3]
    assert preds.label.iloc[0] == "negative" and preds.label.iloc[2] == "positive"
    assert pd.isna(preds.label.iloc[1]) and preds.score.drop(1).between(0, 1).all()
    counts = mlflow.search_runs(experiment_names=["FLIPKART_SENTIMENT_SCORING"]).iloc[0]
    assert counts["metrics.rows"] == 4 and counts["metrics.no_text"] == 1


def test_served_deployment_runs_on_schedule(tmp_path: Path) -> None:
    """The real serve path: starts its own Prefect server, registers the cron deployment, a
    scheduled run completes and lands in MLflow, Ctrl-C stops everything."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / ".prefect"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    serving = subprocess.Popen(
        [sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--cron", "* * * * *"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 150
        runs = pd.DataFrame()
        while time.monotonic() < deadline and serving.poll() is None:
            time.sleep(3)
            if (tmp_path / "mlflow.db").exists():
                mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
                try:
                    runs = orchestration_runs()
                except (mlflow.exceptions.MlflowException, sqlalchemy.exc.OperationalError):
                    continue  # the served run may still be creating the store's tables
                if len(runs) and (runs.status == "FINISHED").any():
                    break
        assert len(runs) and (runs.status == "FINISHED").any(), "no scheduled run finished"
        assert runs["tags.prefect.flow_run_id"].iloc[0]
    finally:
        serving.send_signal(signal.SIGINT)
        try:
            output, _ = serving.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            serving.kill()
            output, _ = serving.communicate()
        mlflow.set_tracking_uri(None)
    assert "Prefect dashboard: http://127.0.0.1:" in output
    assert serving.returncode is not None
