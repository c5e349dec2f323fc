"""The study's shortcut (count each fold once, derive every trial's TF-IDF) against the real thing:
`TfidfVectorizer` fitted on the fold, and `cross_val_score` on the pipeline that gets logged. The tests
named test_pinned_* must pass before the scikit-learn pin moves (`kept_columns` mirrors its
`CountVectorizer._limit_features`)."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import psutil
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.model_selection import StratifiedKFold, cross_val_score

from review_sentiment.constants import PROJECT_DIR
from review_sentiment.data.reviews import ReviewDataError, Split, load_reviews
from review_sentiment.modeling import fold_counts
from review_sentiment.modeling.calibration import out_of_fold_decisions
from review_sentiment.modeling.families import FAMILIES, build_pipeline
from review_sentiment.modeling.fold_counts import (
    NGRAM_SIZES,
    FoldCounts,
    count_fold_sizes,
    count_whole,
    counted,
    fit_tfidf,
    kept_columns,
    tfidf_features,
)
from review_sentiment.processes import ended
from review_sentiment.training import tuning_run
from review_sentiment.training.study import BestTrialDecisions, FoldProcessDied, fold_scorer, objective
from review_sentiment.training.tuning_run import TuningSettings
from tests.helpers import SAMPLE, decisions, wait_for
from text_cleaning import clean_texts


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw texts, cleaned texts, labels."""
    reviews = load_reviews(SAMPLE, "Review text", "Ratings")
    raw = reviews.text.to_numpy(dtype=object)
    return raw, np.asarray(clean_texts(raw), dtype=object), reviews.label.to_numpy()


def count_fold(train: list[str], valid: list[str], n_max: int) -> FoldCounts:
    """As a tuning run counts: once with the longest range, the shorter ranges taken from it."""
    return count_fold_sizes(train, valid, NGRAM_SIZES)[n_max]


def vectorizer(params: dict, n_max: int) -> TfidfVectorizer:
    return TfidfVectorizer(min_df=params["tfidf_min_df"], max_df=params["tfidf_max_df"], ngram_range=(1, n_max),
                           max_features=params["tfidf_max_features"], sublinear_tf=params["tfidf_sublinear_tf"])


def assert_same_features(train: list[str], valid: list[str], n_max: int, params: dict) -> None:
    counts = count_fold(train, valid, n_max)
    reference = vectorizer(params, n_max)
    expected_train, expected_valid = reference.fit_transform(train), reference.transform(valid)
    derived_train, derived_valid = tfidf_features(counts, params)
    kept = kept_columns(counts, params["tfidf_min_df"], params["tfidf_max_df"], params["tfidf_max_features"])
    terms = CountVectorizer(ngram_range=(1, n_max)).fit(train).get_feature_names_out()  # the fold's, sorted
    assert terms[kept].tolist() == reference.get_feature_names_out().tolist()  # same terms, same order
    for expected, derived in ((expected_train, derived_train), (expected_valid, derived_valid)):
        assert derived.shape == expected.shape
        assert abs(derived - expected).max() <= 1e-12  # the bar; in fact they are bit for bit the same:
        for part in ("data", "indices", "indptr"):
            assert np.array_equal(getattr(derived, part), getattr(expected, part))


@pytest.mark.parametrize("n_max", [1, 2])
def test_pinned_every_trials_tfidf_is_the_vectorizers_own(sample: tuple[np.ndarray, ...], n_max: int) -> None:
    """60 random parameter sets per n-gram range (min_df and max_df as counts or shares, as sklearn reads
    them), max_features often small enough to cut through a run of equally frequent terms: the derived
    vocabulary and matrices are TfidfVectorizer's."""
    _, texts, labels = sample
    rng = np.random.default_rng(n_max)
    train, valid = next(StratifiedKFold(5, shuffle=True, random_state=0).split(texts, labels))
    counts = count_fold(texts[train].tolist(), texts[valid].tolist(), n_max)
    tied_cuts = 0
    for _ in range(60):
        params = {"tfidf_min_df": int(rng.integers(1, 8)) if rng.random() < 0.8 else float(rng.uniform(0, 0.02)),
                  "tfidf_max_df": float(rng.uniform(0.05, 1.0)) if rng.random() < 0.8 else int(rng.integers(5, 500)),
                  "tfidf_max_features": [None, int(rng.integers(1, len(counts.doc_freq)))][int(rng.integers(0, 2))],
                  "tfidf_sublinear_tf": bool(rng.integers(0, 2))}
        try:
            kept = kept_columns(counts, params["tfidf_min_df"], params["tfidf_max_df"], params["tfidf_max_features"])
        except ValueError as err:
            with pytest.raises(ValueError, match=str(err)):
                vectorizer(params, n_max).fit(texts[train])
            continue
        assert_same_features(texts[train].tolist(), texts[valid].tolist(), n_max, params)
        df, n_doc = counts.doc_freq, len(train)
        low, high = (value if isinstance(value, int) else value * n_doc
                     for value in (params["tfidf_min_df"], params["tfidf_max_df"]))
        eligible = (df >= low) & (df <= high)
        left_out = counts.term_freq[eligible & ~np.isin(np.arange(len(df)), kept)]
        tied_cuts += bool(len(left_out)) and counts.term_freq[kept].min() in left_out
    assert tied_cuts >= 5  # the cut fell inside a tie often enough for the tie order to be tested


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pinned_a_refit_from_counts_is_the_pipelines_own_fit(sample: tuple[np.ndarray, ...], family: str) -> None:
    """The logged model's TF-IDF fitted from the run's one count of the training texts is left exactly as
    `fit` leaves it (every attribute, its idf's too), and the pipeline then decides every unseen review as
    `pipeline.fit` on the raw texts would: bit for bit."""
    raw, texts, labels = sample
    train, test = next(StratifiedKFold(4, shuffle=True, random_state=1).split(texts, labels))
    counts = count_fold_sizes(texts[train].tolist(), texts[test].tolist(), NGRAM_SIZES, keep_terms=True)
    sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(4):
        params = FAMILIES[family].suggest(sampled.ask())
        expected = build_pipeline(family, params, 3).fit(raw[train], labels[train])
        ours = build_pipeline(family, params, 3)
        ours[0].fit(raw[train])
        X_train, X_test = fit_tfidf(ours.named_steps["tfidf"], counts[params["tfidf_ngram_max"]])
        ours[-1].fit(X_train, labels[train])
        mine, theirs = vars(ours.named_steps["tfidf"]), vars(expected.named_steps["tfidf"])
        assert mine.keys() == theirs.keys()
        assert all(mine[k] == theirs[k] for k in mine if k not in ("_tfidf", "_stop_words_id"))
        assert vars(ours.named_steps["tfidf"]._tfidf).keys() == vars(expected.named_steps["tfidf"]._tfidf).keys()
        assert np.array_equal(ours.named_steps["tfidf"].idf_, expected.named_steps["tfidf"].idf_)
        assert np.array_equal((X_test - expected[:-1].transform(raw[test])).data, [])  # the same features
        assert np.array_equal(decisions(ours, raw[test]), decisions(expected, raw[test]))


def test_pinned_a_cut_through_equally_frequent_terms_keeps_the_vectorizers_pick() -> None:
    train = ["delta alpha echo bravo charlie foxtrot"] * 3 + ["golf"]
    params = {"tfidf_min_df": 1, "tfidf_max_df": 1.0, "tfidf_max_features": 3, "tfidf_sublinear_tf": False}
    assert_same_features(train, ["alpha golf", "zulu"], 2, params)


def test_pinned_limits_that_keep_nothing_fail_as_the_vectorizer_fails() -> None:
    counts = count_fold(["good phone", "bad phone", "good"], ["good"], 1)
    with pytest.raises(ValueError, match="no terms remain"):
        kept_columns(counts, 3, 1.0, None)
    with pytest.raises(ValueError, match="max_df corresponds to < documents than min_df"):
        kept_columns(counts, 3, 0.5, None)


def assert_same_counts(made: FoldCounts, expected: FoldCounts) -> None:
    for matrix in ("train", "valid"):
        a, b = getattr(made, matrix), getattr(expected, matrix)
        assert a.shape == b.shape and a.dtype == b.dtype
        assert all(np.array_equal(getattr(a, part), getattr(b, part)) for part in ("data", "indices", "indptr"))
        assert all(getattr(a, part).dtype == getattr(b, part).dtype for part in ("data", "indices", "indptr"))
    for array in ("doc_freq", "term_freq", "columns", "terms"):
        a, b = getattr(made, array), getattr(expected, array)
        assert (a is None and b is None) or (np.array_equal(a, b) and a.dtype == b.dtype)


def test_counts_made_in_processes_are_the_ones_made_here(sample: tuple[np.ndarray, ...]) -> None:
    """Bit for bit, in the same order: each fold's, and the refit's count of every training text with the
    held-out texts over their vocabulary (made beside the folds', where a fold's process is free for it)."""
    _, texts, labels = sample
    train, held_out = texts[:600].tolist(), texts[600:].tolist()
    here = counted(train, labels[:600], folds=3, seed=7)
    there = counted(train, labels[:600], folds=3, seed=7, processes=2, held_out=held_out)
    assert here.whole is None and there.whole is not None
    for n_max in NGRAM_SIZES:
        for fold in range(3):
            assert_same_counts(there.counts[n_max][fold], here.counts[n_max][fold])
        assert_same_counts(there.whole[n_max], count_whole(train, held_out)[n_max])
        assert there.whole[n_max].terms.tolist() == CountVectorizer(ngram_range=(1, n_max)).fit(
            train).get_feature_names_out().tolist()


@pytest.mark.parametrize("processes", [1, 2])
def test_a_fold_whose_training_reviews_have_no_word_is_the_datas_fault(processes: int) -> None:
    texts, labels = ["good"] + [""] * 11, np.array([1, 0] * 6)  # the fold holding "good" out trains on no word
    with pytest.raises(ReviewDataError, match="a 4-fold split leaves a fold whose training reviews have no word"):
        counted(texts, labels, folds=4, seed=0, processes=processes, held_out=["good"])


@pytest.mark.parametrize(("n_jobs", "join", "whole"), [(1, False, False), (2, False, True), (2, True, False)])
def test_the_refit_uses_the_count_made_with_the_folds(n_jobs: int, join: bool, whole: bool) -> None:
    """A run that counts its folds in processes makes the refit's count with them, and its refit takes that
    count; counted here, or by a worker that joins another's run (it refits nothing), the refit makes it."""
    settings = TuningSettings(SAMPLE, "Review text", "Ratings", ["NaiveBayes"], 2, 3, 0.3, 1, n_jobs, "e", "m",
                              join=join)
    prepared = tuning_run.prepare(settings, load_reviews(SAMPLE))
    assert (prepared.folds.whole is not None) == whole
    assert (prepared.training.counts is prepared.folds.whole) == whole
    fewer = prepared.split  # training data of other rows than the folds were counted from makes its own count
    other = dataclasses.replace(prepared.training, split=Split(fewer.X_train[1:], fewer.X_test, fewer.y_train[1:],
                                                               fewer.y_test))
    assert other.counts is not prepared.folds.whole and other.counts[2].train.shape[0] == len(fewer.y_train) - 1
    expected = count_whole(prepared.training.clean_train, prepared.clean(prepared.split.X_test))
    for n_max in NGRAM_SIZES:
        assert_same_counts(prepared.training.counts[n_max], expected[n_max])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_trials_cv_f1_is_cross_val_score_of_the_logged_pipeline(sample: tuple[np.ndarray, ...],
                                                                  family: str) -> None:
    """Exactly equal, not close: with the same seed the tuning results are the ones tuning on the real
    pipeline gave."""
    raw, texts, labels = sample
    folds = counted(texts.tolist(), labels, folds=3, seed=7)
    sampled = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    with fold_scorer(folds, 1) as scores_of:
        cv_f1 = objective(family, folds, scores_of, seed=7, processes=1)
        for _ in range(4):
            params = FAMILIES[family].suggest(sampled.ask())
            expected = cross_val_score(build_pipeline(family, params, 7), raw, labels,
                                       scoring="f1_macro", cv=StratifiedKFold(3, shuffle=True, random_state=7))
            assert cv_f1(optuna.trial.FixedTrial(params)) == float(np.mean(expected))


def test_folds_scored_in_parallel_give_the_same_study(sample: tuple[np.ndarray, ...]) -> None:
    """Two fold processes report the same running means after the same folds as one: the same trials
    are pruned and every value is the same."""
    _, texts, labels = sample
    folds = counted(texts.tolist(), labels, folds=5, seed=3)
    studies = []
    for processes in (1, 2):
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=3),
                                    pruner=optuna.pruners.MedianPruner(n_startup_trials=2))
        with fold_scorer(folds, processes) as scores_of:
            study.optimize(objective("LinearSVM", folds, scores_of, seed=3, processes=processes), n_trials=12)
        studies.append([(t.state, t.value, t.intermediate_values) for t in study.trials])
    assert studies[0] == studies[1]
    assert any(state == optuna.trial.TrialState.PRUNED for state, _, _ in studies[0])


@pytest.mark.parametrize("processes", [1, 2])
def test_the_best_trials_fold_decisions_are_the_calibrations_out_of_fold_decisions(
        sample: tuple[np.ndarray, ...], processes: int) -> None:
    """What the refit's calibration takes from the tuning instead of fitting the best configuration's fold
    models again is, bit for bit, what fitting them gives; a trial this process did not run gives none."""
    _, texts, labels = sample
    folds = counted(texts.tolist(), labels, folds=5, seed=4)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=4))
    best = BestTrialDecisions()
    with fold_scorer(folds, processes) as scores_of:
        study.optimize(objective("LogisticRegression", folds, scores_of, seed=4, processes=processes, best=best),
                       n_trials=6)
    model = FAMILIES["LogisticRegression"].make(study.best_params, 4)
    expected = out_of_fold_decisions(model, study.best_params, folds, len(labels))
    assert np.array_equal(best.of(study.best_trial.number, folds), expected)
    assert best.of(study.best_trial.number + 1, folds) is None


def test_a_killed_fold_process_fails_its_trial_and_new_ones_take_over(sample: tuple[np.ndarray, ...]) -> None:
    _, texts, labels = sample
    folds = counted(texts.tolist(), labels, folds=4, seed=5)
    params = FAMILIES["NaiveBayes"].suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(0)).ask())
    with fold_scorer(folds, 1) as in_process:
        expected = [score.f1 for score in in_process("NaiveBayes", params, 5, [0, 1])]
    with fold_scorer(folds, 2) as scores_of:
        first = multiprocessing.active_children()
        os.kill(first[0].pid, signal.SIGKILL)
        with pytest.raises(FoldProcessDied, match="died"):
            for _ in range(50):  # the executor notices the death at its next call, or the one after
                scores_of("NaiveBayes", params, 5, [0, 1])
                time.sleep(0.1)
        assert [score.f1 for score in scores_of("NaiveBayes", params, 5, [0, 1])] == expected
        wait_for(lambda: not {p.pid for p in first} & {p.pid for p in multiprocessing.active_children()},
                 timeout=10, what="the broken executor's other process to be ended")


@pytest.mark.e2e  # a whole tuning process killed with SIGKILL, as a user's would be
def test_fold_processes_leave_with_a_run_killed_by_sigkill(tmp_path: Path) -> None:
    """A killed run cannot shut its executor down; its fold processes notice they were orphaned."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import os, time
        import numpy as np
        from review_sentiment.modeling.fold_counts import counted
        from review_sentiment.training.study import fold_scorer
        texts = ["good phone", "bad phone", "great battery", "poor screen"] * 10
        folds = counted(texts, np.array([1, 0, 1, 0] * 10), folds=2, seed=0)
        with fold_scorer(folds, 2):
            import multiprocessing
            print(*[p.pid for p in multiprocessing.active_children()], flush=True)
            time.sleep(60)
    """))
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=PROJECT_DIR)
    children = [psutil.Process(int(pid)) for pid in run.stdout.readline().split()]
    assert len(children) == 2
    run.kill()
    run.wait()
    wait_for(lambda: all(ended(child) for child in children), timeout=10, what="the fold processes to leave")


def test_a_counting_process_killed_leaves_the_run_to_count_here_one_at_a_time(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Killed with SIGKILL (as the kernel's out-of-memory killer kills), a counting process fails the counting
    in processes; the run says so in one line and counts here, one count at a time: the same counts."""
    count, parent, counting = fold_counts._count, os.getpid(), tmp_path / "counting"

    def slow_in_a_process(texts: object, job: int) -> dict[int, FoldCounts]:
        if os.getpid() != parent:
            with open(counting, "a") as said:  # noqa: PTH123
                said.write(f"{os.getpid()}\n")
            time.sleep(30)  # killed meanwhile
        return count(texts, job)

    def kill_one() -> None:
        wait_for(counting.exists, timeout=20, what="a process to start counting")
        os.kill(int(counting.read_text().split()[0]), signal.SIGKILL)

    monkeypatch.setattr(fold_counts, "_count", slow_in_a_process)
    threading.Thread(target=kill_one, daemon=True).start()
    settings = TuningSettings(SAMPLE, "Review text", "Ratings", ["NaiveBayes"], 2, 3, 0.3, 1, 2, "e", "m")
    started = time.monotonic()
    prepared = tuning_run.prepare(settings, load_reviews(SAMPLE))
    assert time.monotonic() - started < 25  # not once the other process's count is in
    assert ("a process counting the CV folds died (killed, or out of memory): counting them here, one at a time"
            in capsys.readouterr().out.splitlines())
    expected = counted(prepared.training.clean_train, prepared.split.y_train, folds=3, seed=1)
    for n_max in NGRAM_SIZES:
        for fold in range(3):
            assert_same_counts(prepared.folds.counts[n_max][fold], expected.counts[n_max][fold])
    assert prepared.folds.whole is None  # the refit makes its own


@pytest.mark.e2e  # as above, while the folds are being counted
def test_counting_processes_leave_with_a_run_killed_by_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import os
        import numpy as np
        from review_sentiment.modeling import fold_counts
        count = fold_counts._count
        def announced(texts, job):  # counts for ever: a process that took a job holds it (none takes two)
            os.write(1, f"counting {os.getpid()}\\n".encode())  # one write: print's pieces interleave on the pipe
            while True:
                count(texts, job)
        fold_counts._count = announced
        words = np.array([f"w{i}" for i in range(5000)])
        texts = [" ".join(row) for row in np.random.default_rng(0).choice(words, (100_000, 12))]
        fold_counts.counted(texts, np.array([0, 1] * 50_000), folds=3, seed=0, processes=2, held_out=texts[:1000])
    """))
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           cwd=PROJECT_DIR)
    counting: set[int] = set()
    try:
        while len(counting) < 2:  # both processes are counting
            line = run.stdout.readline()
            assert re.fullmatch(r"counting \d+\n", line), line + f"(exit code {run.poll()})"
            counting.add(int(line.split()[1]))
        children = [psutil.Process(pid) for pid in counting]
    finally:
        run.kill()  # whatever the test found: the counts never end
    assert run.wait() == -signal.SIGKILL
    wait_for(lambda: all(ended(child) for child in children), timeout=10, what="the counting processes to leave")


@pytest.mark.parametrize(("given", "threshold", "expected"),
                         [(None, 10**6, 5), (None, 100, 3), (5, 100, 5), (4, 10**6, 4)])
def test_a_large_file_is_cross_validated_on_three_folds_unless_told(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], given: int | None, threshold: int,
        expected: int) -> None:
    """The rule reads the file's usable reviews (here the sample's 805 against a lowered threshold);
    `--folds` given always wins, and the run says when the rule chose."""
    monkeypatch.setattr(fold_counts, "LARGE_FILE_REVIEWS", threshold)
    monkeypatch.setattr(tuning_run, "LARGE_FILE_REVIEWS", threshold)
    settings = TuningSettings(SAMPLE, "Review text", "Ratings", ["NaiveBayes"], 2, given, 0.3, 1, 1, "e", "m")
    assert len(tuning_run.prepare(settings, load_reviews(SAMPLE)).folds.labels) == expected
    assert ("CV: 3 folds" in capsys.readouterr().out) == (given is None and expected == 3)


@pytest.mark.parametrize(("usable", "n_jobs", "workers", "expected"), [
    (805, 0, 1, 1),  # the sample: the trial scores its folds itself
    (805, 2, 1, 2),  # told
    (805, -1, 1, 4),  # all cores
    (fold_counts.SMALL_FILE_REVIEWS + 1, 0, 1, 4),  # the cores
    (fold_counts.SMALL_FILE_REVIEWS + 1, 0, 2, 2),  # shared among the workers
    (fold_counts.SMALL_FILE_REVIEWS + 1, 0, 8, 1),
])
def test_a_small_file_scores_its_folds_in_the_trials_process_unless_told(
        monkeypatch: pytest.MonkeyPatch, usable: int, n_jobs: int, workers: int, expected: int) -> None:
    """Fold processes by default only above `SMALL_FILE_REVIEWS` usable reviews (4 cores here; 5 folds)."""
    monkeypatch.setattr(tuning_run.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    settings = TuningSettings(SAMPLE, "Review text", "Ratings", ["NaiveBayes"], 2, 5, 0.3, 1, n_jobs, "e", "m",
                              workers=workers)
    assert settings.fold_processes(usable) == expected
