"""Loading reviews: labels, drop counts, and a one-line error for every user mistake."""
from __future__ import annotations

import os
import random
import re
import string
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

import sentiment_mlflow_optuna
from review_sentiment import cli
from review_sentiment.data.reviews import ReviewDataError, load_reviews, split_reviews
from review_sentiment.training.study import open_storage
from tests.helpers import PROJECT_DIR, SAMPLE, Store


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def reviews_csv(path: Path, n_pos: int, n_neg: int, header: str = "Review text,Ratings") -> Path:
    rows = [f"great thing {i},5" for i in range(n_pos)] + [f"awful thing {i},1" for i in range(n_neg)]
    return write(path, "\n".join([header, *rows]) + "\n")


def test_labels_and_drop_counts(tmp_path: Path) -> None:
    csv = write(tmp_path / "r.csv", "Review text,Ratings\nGood,5\nOk,3\nBad,2\nAwful,1\n"
                "Good,5\n,4\nNo rating,\n   ,5\nFine,4.0\n")
    reviews = load_reviews(csv)
    assert reviews.text.tolist() == ["Good", "Ok", "Bad", "Awful", "Fine"]
    assert reviews.label.tolist() == [1, 1, 0, 0, 1]
    assert (reviews.rows_read, reviews.dropped_missing, reviews.dropped_duplicates) == (9, 3, 1)


def test_tsv_and_custom_columns(tmp_path: Path) -> None:
    tsv = write(tmp_path / "r.tsv", "Rating\tReview\n5\tlovely, really\n1\thorrid\n")
    reviews = load_reviews(tsv, text_col="Review", rating_col="Rating")
    assert reviews.text.tolist() == ["lovely, really", "horrid"]
    assert reviews.label.tolist() == [1, 0]


def test_split_is_seeded_and_holds_out_each_review_by_its_text(tmp_path: Path) -> None:
    """The held-out slice is a seeded function of each review's text: the same seed gives the same split,
    another seed another one, each label is held out at about the test share, and rows appended to the
    file leave every earlier review where it was (a lineage's protected set stays protected)."""
    reviews = load_reviews(reviews_csv(tmp_path / "r.csv", 800, 200))
    a, b = (split_reviews(reviews, 0.25, 5, seed=3) for _ in range(2))
    assert a.X_test.tolist() == b.X_test.tolist()
    assert abs(len(a.y_test) - 250) < 40 and abs((a.y_test == 0).sum() - 50) < 20  # binomial: 3+ sd apart
    assert split_reviews(reviews, 0.25, 5, seed=4).X_test.tolist() != a.X_test.tolist()
    longer = load_reviews(reviews_csv(tmp_path / "more.csv", 1600, 400))
    held = set(split_reviews(longer, 0.25, 5, seed=3).X_test)
    assert held & set(reviews.text) == set(a.X_test)


BAD_INPUTS = {
    "missing file": (lambda d: d / "nope.csv", [], r"nope\.csv: file not found"),
    "a folder": (lambda d: d, [], r"not a file"),
    "empty file": (lambda d: write(d / "e.csv", ""), [], r"e\.csv: file is empty"),
    "binary": (lambda d: (d / "b.csv").write_bytes(b"\x89PNG\x00\xff\xfe\x00" * 50) and d / "b.csv", [],
               r"not a UTF-8 text CSV"),
    "not UTF-8 on line 3": (lambda d: (d / "u.csv").write_bytes(b"Review text,Ratings\ngood phone,5\nbad \xff,1\n")
                            and d / "u.csv", [], r"u\.csv: not a UTF-8 text CSV \(line 3, byte 37 of the file: "
                            r"invalid start byte\)"),
    "ragged csv": (lambda d: write(d / "x.csv", "Review text,Ratings\ngood,5\nbad,1,3,4\n"), [],
                   r"not a readable CSV"),
    "missing column": (lambda d: reviews_csv(d / "c.csv", 50, 50, header="Review,Ratings"), [],
                       r"no column 'Review text'; columns are: 'Review', 'Ratings'"),
    "bad ratings": (lambda d: write(d / "r.csv", "Review text,Ratings\na,5\nb,five\nc,4.5\nd,0\ne,6\n"), [],
                    r"whole-number ratings 1–5; bad values at row 3 \('five'\), row 4 \('4\.5'\), "
                    r"row 5 \('0'\) and 1 more"),
    "one class": (lambda d: reviews_csv(d / "p.csv", 40, 0), [], r"every usable review is positive"),
    "too few for folds": (lambda d: reviews_csv(d / "f.csv", 40, 7), ["--folds", "7"],
                          r"too few negative reviews for 7-fold CV: 7 usable, 6 left for training"),
    "too few to split": (lambda d: reviews_csv(d / "s.csv", 2, 1), [], r"too few reviews to split"),
    "only emoji": (lambda d: write(d / "m.csv", "Review text,Ratings\n" + "".join(
        f"{'😍👍🔥'[i % 3] * (i % 5 + 1)},{5 if i % 4 else 1}\n" for i in range(80))), [],
        r"m\.csv: no training review has a word left after cleaning"),
    "one word everywhere": (lambda d: write(d / "w.csv", "Review text,Ratings\n" + "".join(
        f"Good {'😍' * (i % 7 + 1)}{'!' * (i // 7)},{5 if i % 4 else 1}\n" for i in range(80))), [],
        r"w\.csv: every word left after cleaning is in more than 90% of the training reviews"),
    "numeric bad rating": (lambda d: write(d / "n.csv", "Review text,Ratings\na,5\nb,0\nc,3\n"), [],
                           r"n\.csv: column 'Ratings' must hold whole-number ratings 1–5; bad values at row 3 \(0\) "),
    "no negative in test": (lambda d: reviews_csv(d / "t.csv", 200, 5), ["--test-size", "0.05"],
                            r"t\.csv: the test split holds no negative review \(8 reviews, 5 negative in all\)"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, untouched_store: Store, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture
) -> None:
    make, extra, message = BAD_INPUTS[case]
    path = make(tmp_path_factory.mktemp("data"))
    assert sentiment_mlflow_optuna.main(["--data", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    assert not (untouched_store.path / "mlflow.db").exists() and not (untouched_store.path / "mlruns").exists()


def random_words(path: Path, rows: int) -> Path:
    """Reviews of three made-up words each, no word shared: TF-IDF with min_df 2 or more keeps none."""
    rng = random.Random(3)
    return write(path, "Review text,Ratings\n" + "".join(
        f"{' '.join(''.join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(3))},{5 if i % 3 else 1}\n"
        for i in range(rows)))


def test_a_failure_after_writing_takes_back_what_was_written(store: Store, tmp_path: Path, capsys) -> None:
    """Seed 1 samples min_df 6 for the only trial: it fails once the family's run is open. One line, exit 2,
    and neither a run (nor its trial's child run) nor a registered model is left to see."""
    args = ["--data", str(random_words(tmp_path / "u.csv", 60)), "--trials", "1", "--folds", "2", "--seed", "1",
            "--models", "LogisticRegression", "NaiveBayes"]
    assert sentiment_mlflow_optuna.main(args) == 2
    captured = capsys.readouterr()
    last = captured.err.splitlines()[-1]  # MLflow logs creating the experiment above it
    assert last.startswith("error: ") and "u.csv: every LogisticRegression trial failed" in last
    assert "trial   1  failed: min_df 6" in captured.out and "Traceback" not in captured.out + captured.err
    assert mlflow.search_runs(search_all_experiments=True).empty
    assert mlflow.MlflowClient().search_registered_models() == []
    deleted = mlflow.search_runs(search_all_experiments=True, run_view_type=ViewType.DELETED_ONLY)
    assert len(deleted) == 3  # both families' runs (made before any trial) and the trial, in MLflow's trash
    journal = store.path / "optuna.journal"  # the default storage, where the studies were made
    assert journal.exists() and optuna.get_all_study_names(open_storage(str(journal))) == []  # a rerun starts afresh


def test_loader_raises_review_data_error_only(tmp_path: Path) -> None:
    with pytest.raises(ReviewDataError):
        load_reviews(tmp_path / "missing.csv")


@pytest.mark.e2e  # the CLI as a user starts it, in a process of its own
def test_cli_exit_code_and_no_traceback(tmp_path: Path) -> None:
    """As a user sees it: a real process, exit status 2, one line on stderr."""
    bad = write(tmp_path / "bad.csv", "Review text,Stars\ngood,5\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--data", str(bad)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {bad}: no column 'Ratings'; columns are: 'Review text', "
                                   f"'Stars' (use --text-col / --rating-col)")
    assert not (tmp_path / "mlflow.db").exists()


def test_sample_is_the_default_data() -> None:
    assert sentiment_mlflow_optuna.parse_args([]).data == SAMPLE


@pytest.mark.parametrize("url", ["mysql://user:secret@host/optuna", "redis://host", "optuna.db"])
def test_a_storage_whose_trial_claims_cannot_be_locked_is_refused_in_one_line(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        sentiment_mlflow_optuna.parse_args(["--storage", url])
    assert refused.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "argument --storage: must be FILE.journal, sqlite:///FILE or postgresql://" in error
    assert "secret" not in error


@pytest.mark.parametrize("url", ["/no/such/folder/s.journal", "sqlite:////no/such/folder/s.db"])
def test_a_file_storage_in_a_missing_folder_is_refused_in_one_line(
        url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        sentiment_mlflow_optuna.parse_args(["--storage", url])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("no folder /no/such/folder to hold " +
                                                                    url.rsplit("/", 1)[1])


@pytest.mark.parametrize("url", [str(Path("/tmp/optuna.journal").resolve()), "sqlite:////tmp/optuna.db", "postgresql://u:p@h/optuna",
                                 "postgresql+psycopg://h/o"])
def test_journal_sqlite_and_postgresql_storages_are_taken(url: str) -> None:
    assert sentiment_mlflow_optuna.parse_args(["--storage", url]).storage == url


def test_a_journal_is_named_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """So that a worker started elsewhere on the machine (`--join`) names the same file."""
    monkeypatch.chdir(tmp_path)
    assert sentiment_mlflow_optuna.parse_args(["--storage", "runs.journal"]).storage == str(
        (tmp_path / "runs.journal").resolve())


@pytest.mark.parametrize("name", ["", "w" * 8001])
def test_a_worker_name_no_child_run_can_carry_is_refused_in_one_line(
        name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Up front: the child runs' `create_run` would refuse it on PostgreSQL only as they are written."""
    assert cli.LONGEST_TAG == MAX_TAG_VAL_LENGTH  # the limit mirrored from MLflow
    with pytest.raises(SystemExit) as refused:
        sentiment_mlflow_optuna.parse_args(["--join", "--worker-name", name])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"argument --worker-name: must be 1 to 8,000 characters, got {len(name):,}")
    assert sentiment_mlflow_optuna.parse_args(["--worker-name", "w" * 8000]).worker_name == "w" * 8000
