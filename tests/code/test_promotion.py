"""Promotion: one rule decides, on reviews neither model trained on (the lineage's protected set, and
trusted feedback where it can judge), by compare-and-set; every decision is recorded on the version."""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from review_sentiment.constants import MODEL_NAME
from review_sentiment.data.reviews import load_reviews
from review_sentiment.modeling.metrics import label_codes, macro_f1, macro_f1_of_codes
from review_sentiment.tracking.model_logging import training_dataset
from review_sentiment.tracking.orphans import PID
from review_sentiment.tracking.promotion import (
    BOOTSTRAP_RESAMPLES,
    FEEDBACK,
    MIN_COMPARED_REVIEWS,
    Evidence,
    decide_pending,
    promote_if_better,
    score,
)
from review_sentiment.tracking.records import Decision, Lineage
from review_sentiment.tracking.registry import current_champion, lineage_of
from tests.helpers import FAIR, SAMPLE, STRONG, WEAK, Store, f1_of, protected, registered, the_split


def decision(version) -> Decision:
    return Decision.of(mlflow.MlflowClient().get_model_version(MODEL_NAME, version.version))


def test_worse_model_is_registered_but_not_promoted(store: Store) -> None:
    split = the_split(0)
    good = registered(split.X_train, split.y_train, STRONG)
    bad = registered(split.X_train, 1 - split.y_train, STRONG)  # learns the opposite
    first = promote_if_better(MODEL_NAME, good, protected(split))
    assert first.promoted and first.champion == str(good.version)
    worse = promote_if_better(MODEL_NAME, bad, protected(split))
    assert not worse.promoted and "not promoted" in worse.reason and worse.champion == str(good.version)
    assert current_champion(MODEL_NAME).version == good.version
    recorded = decision(bad)
    assert not recorded.promoted and recorded.incumbent == str(good.version) and recorded.reason == worse.reason
    assert recorded.protected.candidate_f1 < recorded.protected.incumbent_f1 and recorded.protected.high < 0


def test_a_tie_keeps_the_incumbent(store: Store) -> None:
    """The same model registered twice: the second is no better, so nothing moves."""
    split = the_split()
    first, twin = (registered(split.X_train, split.y_train, STRONG) for _ in range(2))
    promote_if_better(MODEL_NAME, first, protected(split))
    tie = promote_if_better(MODEL_NAME, twin, protected(split))
    assert not tie.promoted and "a tie keeps the incumbent" in tie.reason
    assert current_champion(MODEL_NAME).version == first.version


def test_the_comparison_leaves_out_reviews_the_champion_trained_on(store: Store) -> None:
    """A champion trained on older data that overlaps today's test split looks better than it is."""
    split = the_split()
    seen = np.random.default_rng(0).choice(split.X_test.index, len(split.X_test) // 2, replace=False)
    older = np.concatenate([split.X_train.index[: len(split.X_train) // 3], seen])
    reviews = load_reviews(SAMPLE)
    champion = registered(reviews.text.loc[older], reviews.label.loc[older], STRONG | {"model_C": 10.0})
    promote_if_better(MODEL_NAME, champion, protected(split))
    candidate = registered(split.X_train, split.y_train, STRONG)

    unseen = ~split.X_test.index.isin(seen)
    champion_everywhere, champion_unseen = (f1_of(champion, split.X_test[m], split.y_test[m])
                                            for m in (np.ones(len(unseen), dtype=bool), unseen))
    candidate_everywhere, candidate_unseen = (f1_of(candidate, split.X_test[m], split.y_test[m])
                                              for m in (np.ones(len(unseen), dtype=bool), unseen))
    assert champion_everywhere > candidate_everywhere  # scored on the whole split, the champion would stay
    assert candidate_unseen > champion_unseen  # on reviews neither saw, the candidate is better

    promotion = promote_if_better(MODEL_NAME, candidate, protected(split))
    assert promotion.promoted, promotion.reason
    assert (f"{candidate_unseen:.4f} vs {champion_unseen:.4f} on {int(unseen.sum())} protected set reviews"
            in promotion.reason)
    assert decision(candidate).protected.reviews == int(unseen.sum())


def test_a_comparison_leaves_nothing_in_tmpdir(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides' training records are downloaded to compare them: into folders removed afterwards (MLflow's
    own, by default, stayed in TMPDIR after every successful run that compared with a champion)."""
    split = the_split()
    promote_if_better(MODEL_NAME, registered(split.X_train, split.y_train, WEAK), protected(split))
    candidate = registered(split.X_train, split.y_train, STRONG)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    promote_if_better(MODEL_NAME, candidate, protected(split))
    assert list(temporary.iterdir()) == []


def test_a_champion_that_trained_on_the_whole_test_split_is_not_replaced_blindly(store: Store) -> None:
    split = the_split()
    reviews = load_reviews(SAMPLE)
    champion = registered(reviews.text, reviews.label, STRONG)  # every review, test split included
    promote_if_better(MODEL_NAME, champion, protected(split))
    candidate = registered(split.X_train, split.y_train, STRONG)
    promotion = promote_if_better(MODEL_NAME, candidate, protected(split))
    assert not promotion.promoted and f"fewer than {MIN_COMPARED_REVIEWS} protected set reviews" in promotion.reason
    assert current_champion(MODEL_NAME).version == champion.version


def test_a_champion_without_training_records_is_compared_on_the_whole_split(store: Store) -> None:
    split = the_split()
    champion = registered(split.X_train, split.y_train, FAIR, record_training=False)  # as logged before
    promote_if_better(MODEL_NAME, champion, protected(split))
    promotion = promote_if_better(MODEL_NAME, registered(split.X_train, split.y_train, STRONG), protected(split))
    assert promotion.promoted and f"on {len(split.y_test)} protected set reviews" in promotion.reason


def test_worse_on_the_protected_set_beyond_noise_loses_whatever_feedback_says(store: Store) -> None:
    """Feedback that flips every label makes the worse model look better there; the protected set vetoes."""
    split = the_split()
    good = registered(split.X_train, split.y_train, STRONG)
    promote_if_better(MODEL_NAME, good, protected(split))
    poisoned = registered(split.X_train, 1 - split.y_train, STRONG)
    flipped = Evidence.of(FEEDBACK, split.X_test, 1 - split.y_test)  # "trusted" labels, all wrong
    promotion = promote_if_better(MODEL_NAME, poisoned, protected(split), flipped)
    assert not promotion.promoted and "worse on the protected set beyond noise" in promotion.reason
    recorded = decision(poisoned)
    assert recorded.feedback.candidate_f1 > recorded.feedback.incumbent_f1  # feedback alone would have promoted
    assert current_champion(MODEL_NAME).version == good.version


def test_trusted_feedback_decides_when_the_protected_set_sees_no_difference_beyond_noise(store: Store) -> None:
    split = the_split()
    fair = registered(split.X_train, split.y_train, FAIR)
    promote_if_better(MODEL_NAME, fair, protected(split))
    strong = registered(split.X_train, split.y_train, STRONG)
    same_labels = Evidence.of(FEEDBACK, split.X_test, split.y_test)
    promotion = promote_if_better(MODEL_NAME, strong, protected(split), same_labels)
    assert promotion.promoted and "better on the trusted feedback" in promotion.reason


def test_a_model_of_other_data_does_not_replace_the_champion_without_allow_new_data(store: Store,
                                                                                     tmp_path) -> None:
    split = the_split()
    ours = Lineage.of(SAMPLE, "Review text", "Ratings", 0.3, 42)
    other = Lineage.of(tmp_path / "other.csv", "Review text", "Ratings", 0.3, 42)
    champion = registered(split.X_train, split.y_train, WEAK, lineage=ours)
    promote_if_better(MODEL_NAME, champion, protected(split))
    better = registered(split.X_train, split.y_train, STRONG, lineage=other)
    refused = promote_if_better(MODEL_NAME, better, protected(split))
    assert not refused.promoted and f"trained on {other.data}, champion v{champion.version} on {ours.data}" \
        in refused.reason and "--allow-new-data" in refused.reason
    assert promote_if_better(MODEL_NAME, better, protected(split), allow_new_data=True).promoted


def test_a_version_left_without_a_decision_gets_one_on_the_next_command(store: Store) -> None:
    """A command killed between registering and promoting leaves its version undecided: the next one
    that registers or promotes decides it, on its lineage's protected set."""
    split = the_split()
    lineage = Lineage.of(SAMPLE, "Review text", "Ratings", 0.3, 42)
    champion = registered(split.X_train, split.y_train, WEAK, lineage=lineage)
    promote_if_better(MODEL_NAME, champion, protected(split))
    orphan = registered(split.X_train, split.y_train, STRONG, lineage=lineage)  # its command died here:
    assert decision(orphan) is None and decide_pending(MODEL_NAME) == []  # not while its writer lives
    mlflow.MlflowClient().set_tag(orphan.run_id, PID, str(2**22 + 1))  # above any pid: a writer that is gone
    [line] = decide_pending(MODEL_NAME)
    assert line.startswith(f"Decided v{orphan.version}, registered by a command that did not finish: ")
    assert decision(orphan).promoted and current_champion(MODEL_NAME).version == orphan.version
    assert decide_pending(MODEL_NAME) == []


def test_a_champion_from_before_lineages_keeps_the_file_its_run_logged(store: Store, tmp_path) -> None:
    """A registry from before lineages were recorded: the champion's lineage is the file its run logged as
    its training dataset, so a model of the bundled sample does not replace a champion of the user's file."""
    split = the_split()
    theirs = tmp_path / "mine.csv"
    theirs.write_text(SAMPLE.read_text(encoding="utf-8"), encoding="utf-8")  # the user's own file (same rows)
    champion = registered(split.X_train, split.y_train, WEAK)
    frame = load_reviews(theirs).frame
    with mlflow.start_run(run_id=champion.run_id):
        mlflow.log_input(training_dataset(frame, str(theirs)), context="training")
        mlflow.log_params({"seed": 42, "test_size": 0.3})
    promote_if_better(MODEL_NAME, champion, protected(split))
    assert lineage_of(champion) == Lineage.of(theirs, "Review text", "Ratings", 0.3, 42)
    sample = registered(split.X_train, split.y_train, STRONG, lineage=Lineage.of(SAMPLE, "Review text", "Ratings",
                                                                                   0.3, 42))
    refused = promote_if_better(MODEL_NAME, sample, protected(split))
    assert not refused.promoted and f"champion v{champion.version} on {theirs}" in refused.reason


def macro_f1_by_definition(truth: np.ndarray, said: np.ndarray, axis: int) -> np.ndarray:
    """The mean of both labels' F1 = 2·hits / (2·hits + errors), from the two label arrays."""
    wrong = np.sum(truth != said, axis=axis)
    return sum(2 * np.sum((truth == k) & (said == k), axis=axis) / (2 * np.sum((truth == k) & (said == k), axis=axis)
                                                                    + wrong) for k in (0, 1)) / 2


@pytest.mark.parametrize(("true_type", "said_type"), [(np.int64, np.int64), (np.uint8, bool), (np.uint64, np.int64),
                                                       (bool, np.int32)])
def test_the_macro_f1_is_sklearns_wherever_it_is_counted(true_type, said_type) -> None:
    """`macro_f1` counts 0/1 labels itself: exactly sklearn's macro F1 (zero_division=0, over the labels either
    side holds) on any size, share of positives and accuracy, one label only included; other input goes to
    sklearn (its number, or its error)."""
    rng = np.random.default_rng(11)
    for n in (1, 2, 3, 30, 500):
        for positive in (0.0, 0.05, 0.5, 1.0):
            for right in (0.0, 0.4, 0.9, 1.0):
                truth = rng.random(n) < positive
                said = np.where(rng.random(n) < right, truth, ~truth)
                ours = macro_f1(truth.astype(true_type), said.astype(said_type))
                assert ours == f1_score(truth, said, average="macro", zero_division=0)
    assert macro_f1(["pos", "neg", "pos"], ["pos", "pos", "pos"]) == pytest.approx(0.4)  # sklearn's own
    with pytest.raises(TypeError):  # a masked label is not a label, for sklearn
        macro_f1(np.ma.array([0, 1, 1], mask=[0, 0, 1]), np.array([0, 1, 0]))


def test_the_interval_is_scipys_paired_bootstrap_of_the_macro_f1() -> None:
    """Resampling one label code per review is the paired bootstrap of the label arrays: the same
    interval, draw for draw, for the promotion's pair of models and the monitor's one model on feedback."""
    rng = np.random.default_rng(5)
    truth = rng.integers(0, 2, 300)
    a, b = (np.where(rng.random(300) < share, truth, 1 - truth) for share in (0.85, 0.8))
    assert macro_f1_by_definition(truth, a, -1) == pytest.approx(macro_f1(truth, a), abs=1e-12)
    ours = score(Evidence.of(FEEDBACK, [f"review {i}" for i in range(300)], truth), a, b, seed=3)
    theirs = stats.bootstrap(
        (truth, a, b), lambda t, x, y, axis: macro_f1_by_definition(t, x, axis) - macro_f1_by_definition(t, y, axis),
        paired=True, vectorized=True, method="percentile", n_resamples=BOOTSTRAP_RESAMPLES, batch=100,
        rng=np.random.default_rng(3)).confidence_interval
    assert abs(ours.low - theirs.low) <= 1e-12 and abs(ours.high - theirs.high) <= 1e-12
    one = stats.bootstrap((label_codes(truth, a),), lambda codes, axis: macro_f1_of_codes(codes, 0, 1, axis),
                          vectorized=True, method="percentile", n_resamples=BOOTSTRAP_RESAMPLES,
                          rng=np.random.default_rng(4))
    its = stats.bootstrap((truth, a), lambda t, x, axis: macro_f1_by_definition(t, x, axis), paired=True,
                          vectorized=True, method="percentile", n_resamples=BOOTSTRAP_RESAMPLES,
                          rng=np.random.default_rng(4))
    assert np.allclose(one.bootstrap_distribution, its.bootstrap_distribution, rtol=0, atol=1e-12)
