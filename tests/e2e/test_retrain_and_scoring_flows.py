"""The Prefect flows for real, against a real Prefect server (the schedule itself: tests/e2e)."""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

import text_cleaning
from review_sentiment.constants import BEST_PARAMS_ARTIFACT, MODEL_NAME, RETRAIN_EXPERIMENT, SCORING_EXPERIMENT
from review_sentiment.data import reviews
from review_sentiment.modeling import calibration, families, fast_scorer, fold_counts, linear, metrics
from review_sentiment.monitoring import profile
from review_sentiment.orchestration import retrain
from review_sentiment.orchestration.batch_scoring import ScoredFile, score_reviews
from review_sentiment.orchestration.retrain import retrain_logistic
from review_sentiment.tracking import model_logging, publication
from review_sentiment.tracking.promotion import promote_if_better
from review_sentiment.tracking.registry import current_champion
from review_sentiment.training import release, study
from tests import crafted
from tests.helpers import FAST, PROJECT_DIR, SAMPLE, Store, run_script


@pytest.fixture(scope="module", autouse=True)
def prefect_api(prefect_server: str):
    """The flows run in this process against the session's Prefect server. Flow-run heartbeats (crash
    detection, every 180 s) are off here: joining their thread cost ~0.8 s of each ~1.1 s run."""
    with temporary_settings(updates={PREFECT_API_URL: prefect_server, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
        APILogWorker.drain_all()  # deliver the runs' logs and events while the server still answers
        EventsWorker.drain_all()


def versions() -> list:
    return mlflow.MlflowClient().search_model_versions(f"name='{MODEL_NAME}'")


def orchestration_runs() -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[RETRAIN_EXPERIMENT])


def test_retrain_registers_then_skips_unchanged_then_registers_changed(store: Store, tmp_path: Path) -> None:
    first = retrain_logistic(data_path=str(SAMPLE))
    assert first.status == "registered" and first.promoted and first.version == "1"
    run = orchestration_runs().iloc[0]
    assert run["tags.outcome"] == "registered" and run["tags.prefect.flow_run_id"]
    assert run["tags.hyperparameter_source"] == "published defaults"
    assert run["params.model_C"] == "0.5" and run["metrics.test_f1"] == pytest.approx(first.test_f1)
    assert run.status == "FINISHED" and run["tags.data_digest"]

    skipped = retrain_logistic(data_path=str(SAMPLE), return_state=True)  # as the dashboard shows it
    assert skipped.is_completed() and skipped.name == "Skipped"
    second = skipped.result()
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
    assert str(current_champion(MODEL_NAME).version) == good.version


def test_reuses_the_configuration_tuned_on_the_same_data(store: Store, tmp_path: Path) -> None:
    """CV F1 on other data does not compare: a near-perfect score on easy reviews must not win."""
    easy = tmp_path / "easy.csv"
    easy.write_text("Review text,Ratings\n" + "".join(f"great thing {i},5\n" for i in range(60))
                    + "".join(f"awful thing {i},1\n" for i in range(30)), encoding="utf-8")
    run_script(FAST + ["--models", "LogisticRegression", "--trials", "2"])
    run_script(FAST + ["--models", "LogisticRegression", "--trials", "2", "--data", str(easy)])
    on_sample, on_easy = sorted(versions(), key=lambda v: int(v.version))
    assert float(on_easy.tags["cv_f1_macro"]) > float(on_sample.tags["cv_f1_macro"])

    same = retrain_logistic(data_path=str(SAMPLE))  # the tuned model itself: reused, not registered again
    assert same.status == "skipped" and f"identical to v{on_sample.version}" in same.message
    run = orchestration_runs().iloc[0]
    assert run["tags.hyperparameter_source"].startswith(f"tuned on the same data (v{on_sample.version},")
    sample_params = mlflow.artifacts.load_dict(f"runs:/{on_sample.run_id}/{BEST_PARAMS_ARTIFACT}")
    assert run["params.model_C"] == str(sample_params["model_C"])

    other = tmp_path / "other.csv"
    pd.read_csv(SAMPLE).iloc[:-40].to_csv(other, index=False)
    assert retrain_logistic(data_path=str(other)).status == "registered"
    run = orchestration_runs().iloc[0]
    assert run["tags.hyperparameter_source"].startswith(f"most recent tuning run (v{on_easy.version})")


def test_reviews_sharing_too_few_words_fail_in_one_line_and_register_nothing(store: Store, tmp_path: Path) -> None:
    """The published defaults keep a word only if 3 training reviews share it: here none do."""
    sparse = tmp_path / "sparse.csv"
    words = [a + b + c for a, b, c in itertools.product("bdfgkm", "aeiou", "lnprst")]  # 180 words, each used once
    sparse.write_text("Review text,Ratings\n" + "".join(f"{words[2 * i]} {words[2 * i + 1]},{5 if i % 3 else 1}\n"
                                                      for i in range(60)), encoding="utf-8")
    with pytest.raises(reviews.ReviewDataError, match="sparse.csv: after cleaning, no word is in at least 3"):
        retrain_logistic(data_path=str(sparse))
    assert versions() == []


def test_missing_data_fails_cleanly(store: Store) -> None:
    retrain_logistic(data_path=str(SAMPLE))
    with pytest.raises(reviews.ReviewDataError, match="nope.csv: file not found"):
        retrain_logistic(data_path=str(store.path / "nope.csv"))
    assert len(versions()) == 1
    assert "RUNNING" not in set(orchestration_runs().status)


def test_scorer_writes_one_prediction_per_input_row(store: Store, tmp_path: Path) -> None:
    with pytest.raises(reviews.ReviewDataError, match="@champion: no version holds that alias yet"):
        score_reviews(str(SAMPLE), str(tmp_path / "early.csv"))
    assert not (tmp_path / "early.csv").exists()
    retrain_logistic(data_path=str(SAMPLE))
    new = tmp_path / "new.csv"
    texts = ["Not good at all", None, "Superb laptop 👍", "ok"]
    pd.DataFrame({"Review text": texts, "x": range(4)}).to_csv(new, index=False)
    out = tmp_path / "preds.csv"
    scored = score_reviews(str(new), str(out))
    assert scored == ScoredFile(rows=4, labelled=3) and str(scored) == "3 of 4 rows (1 without text, left unlabelled)"
    preds = pd.read_csv(out)
    assert list(preds.columns) == ["row_id", "review", "label", "score", "probability"]
    assert preds.row_id.tolist() == [0, 1, 2, 3]
    assert preds.label.iloc[0] == "negative" and preds.label.iloc[2] == "positive"
    assert pd.isna(preds.label.iloc[1]) and preds.score.drop(1).between(0, 1).all()
    assert pd.isna(preds.probability.iloc[1]) and preds.probability.iloc[0] < 0.5 < preds.probability.iloc[2]
    counts = mlflow.search_runs(experiment_names=[SCORING_EXPERIMENT]).iloc[0]
    assert counts["metrics.rows"] == 4 and counts["metrics.no_text"] == 1

    one_column = tmp_path / "one.csv"  # a blank line there is an empty review, and still a row
    one_column.write_text("Review text\nSuperb laptop\n\nNot good at all\n", encoding="utf-8")
    assert score_reviews(str(one_column), str(out)) == ScoredFile(rows=3, labelled=2)
    preds = pd.read_csv(out)
    assert preds.row_id.tolist() == [0, 1, 2] and preds.review.iloc[2] == "Not good at all"
    assert pd.isna(preds.label.iloc[1]) and preds.label.iloc[2] == "negative"


def test_the_scorer_refuses_a_champion_trained_with_other_cleaning(store: Store, tmp_path: Path) -> None:
    retrain_logistic(data_path=str(SAMPLE))
    stale = crafted.with_other_cleaning(current_champion(MODEL_NAME))
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", stale.version)
    with pytest.raises(reviews.ReviewDataError, match=f"@champion: refused, {MODEL_NAME} v{stale.version}: it was "
                                                      f"trained with other cleaning code"):
        score_reviews(str(SAMPLE), str(tmp_path / "out.csv"))
    assert not (tmp_path / "out.csv").exists()


def test_a_data_error_in_a_flow_is_logged_in_one_line(store: Store, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Prefect logs a failed flow with its traceback; for a user's mistake the message is the news."""
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("Review,Stars\ngreat,5\n", encoding="utf-8")
    with pytest.raises(reviews.ReviewDataError, match="wrong.csv: no column 'Review text'"):
        score_reviews(str(wrong), str(tmp_path / "out.csv"))
    reported = [r for r in caplog.records if "ReviewDataError" in r.getMessage()]
    assert reported and all(r.exc_info is None and r.exc_text is None for r in reported)


def test_the_fingerprint_covers_the_code_that_shapes_the_model() -> None:
    """A change to cleaning, loading, the pipelines, the metric, calibration, the reference profile, model
    logging and publishing or the path that fits and registers must trigger a retrain, wherever those
    modules live."""
    files = {Path(module.__file__) for module in release.MODEL_CODE}
    expected = {text_cleaning, reviews, families, fold_counts, fast_scorer, linear, metrics, calibration, profile,
                model_logging, publication, study, release}
    assert files == {Path(module.__file__) for module in expected}
    assert all(path.is_file() for path in files)


def test_a_code_change_triggers_a_retrain(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = tmp_path / "shapes_the_model.py"
    code.write_text("A = 1\n")
    monkeypatch.setattr(release, "MODEL_CODE", (*release.MODEL_CODE, SimpleNamespace(__file__=str(code))))
    assert retrain_logistic(data_path=str(SAMPLE)).status == "registered"
    assert retrain_logistic(data_path=str(SAMPLE)).status == "skipped"
    code.write_text("A = 2\n")
    assert retrain_logistic(data_path=str(SAMPLE)).status == "registered"


def test_an_edit_past_row_10000_triggers_a_retrain(store: Store, tmp_path: Path) -> None:
    """MLflow's dataset digest reads 10,000 rows; the fingerprint must see every one."""
    data = tmp_path / "big.csv"
    subprocess.run([sys.executable, str(PROJECT_DIR / "data" / "make_sample_reviews.py"), "--rows", "12500",
                    "--out", str(data)], check=True, capture_output=True)
    assert retrain_logistic(data_path=str(data)).status == "registered"
    table = pd.read_csv(data)
    last = table["Review text"].dropna().drop_duplicates(keep=False).index.max()  # a row loading keeps
    assert last >= 12_000
    table.loc[last, "Ratings"] = 1 if table.loc[last, "Ratings"] >= 3 else 5
    table.to_csv(data, index=False)
    assert retrain_logistic(data_path=str(data)).status == "registered"


def test_a_retried_register_step_registers_the_run_once(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault between registration and promotion makes Prefect retry the whole step."""
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionError("registry unreachable (injected after registration)")
        return promote_if_better(*args, **kwargs)

    monkeypatch.setattr(retrain, "promote_if_better", fails_once)
    outcome = retrain_logistic(data_path=str(SAMPLE))
    assert len(calls) == 2 and outcome.status == "registered" and outcome.promoted
    [version] = versions()
    assert str(version.version) == outcome.version == "1"


@pytest.mark.e2e  # a whole tuning run first: slow for the inner loop
def test_the_quick_start_then_a_retrain_registers_nothing_new_and_keeps_the_champion(store: Store) -> None:
    """The tuning run chose its champion by the rule; the retrain's model is the tuned Logistic
    Regression itself (same data, parameters, seed and code): reused, already decided, nothing moves."""
    run_script(FAST)
    champion, before = current_champion(MODEL_NAME), len(versions())
    outcome = retrain_logistic()  # no data: the champion's lineage
    assert outcome.status == "skipped" and "identical to v" in outcome.message, outcome.message
    assert len(versions()) == before and current_champion(MODEL_NAME).version == champion.version


@pytest.mark.e2e  # a whole tuning run first: slow for the inner loop
def test_a_retrain_follows_the_champions_lineage_and_other_data_does_not_replace_it(store: Store,
                                                                                     tmp_path: Path) -> None:
    mine = tmp_path / "mine.csv"
    subprocess.run([sys.executable, str(PROJECT_DIR / "data" / "make_sample_reviews.py"), "--rows", "1500",
                    "--seed", "5", "--out", str(mine)], check=True, capture_output=True)
    run_script(FAST + ["--models", "LogisticRegression", "--trials", "2", "--data", str(mine), "--seed", "3"])
    champion = current_champion(MODEL_NAME)
    followed = retrain_logistic(overrides={"model_C": 0.3})  # no data: the champion's file, split and seed
    assert followed.status == "registered"
    assert {(v.tags["lineage.data"], v.tags["lineage.seed"]) for v in versions()} == {(str(mine), "3")}

    sample = retrain_logistic(data_path=str(SAMPLE))  # the bundled sample's model wins on its own slice only
    assert sample.status == "registered" and not sample.promoted
    assert f"trained on {SAMPLE}, champion v" in sample.message and "--allow-new-data" in sample.message
    assert str(current_champion(MODEL_NAME).version) in (str(champion.version), followed.version)
    assert current_champion(MODEL_NAME).tags["lineage.data"] == str(mine)
