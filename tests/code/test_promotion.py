"""Promotion: `champion` moves only to a model at least as good, compared on reviews neither model
trained on, and by compare-and-set, so two processes promoting at once cannot let the worse one win."""
from __future__ import annotations

import numpy as np

from review_sentiment.constants import MODEL_NAME
from review_sentiment.data.reviews import load_reviews
from review_sentiment.tracking.promotion import MIN_COMPARED_REVIEWS, promote_if_better
from review_sentiment.tracking.registry import current_champion
from tests.helpers import FAIR, SAMPLE, STRONG, Store, f1_of, registered, the_split


def test_worse_model_is_registered_but_not_promoted(store: Store) -> None:
    split = the_split(0)
    good = registered(split.X_train, split.y_train, STRONG)
    bad = registered(split.X_train, 1 - split.y_train, STRONG)  # learns the opposite
    first = promote_if_better(MODEL_NAME, good, split.X_test, split.y_test)
    assert first.promoted and first.champion == str(good.version)
    worse = promote_if_better(MODEL_NAME, bad, split.X_test, split.y_test)
    assert not worse.promoted and "not promoted" in worse.reason and worse.champion == str(good.version)
    assert current_champion(MODEL_NAME).version == good.version


def test_the_comparison_leaves_out_reviews_the_champion_trained_on(store: Store) -> None:
    """A champion trained on older data that overlaps today's test split looks better than it is."""
    split = the_split()
    seen = np.random.default_rng(0).choice(split.X_test.index, len(split.X_test) // 2, replace=False)
    older = np.concatenate([split.X_train.index[: len(split.X_train) // 3], seen])
    reviews = load_reviews(SAMPLE)
    champion = registered(reviews.text.loc[older], reviews.label.loc[older], STRONG | {"model_C": 10.0})
    promote_if_better(MODEL_NAME, champion, split.X_test, split.y_test)
    candidate = registered(split.X_train, split.y_train, STRONG)

    unseen = ~split.X_test.index.isin(seen)
    champion_everywhere, champion_unseen = (f1_of(champion, split.X_test[m], split.y_test[m])
                                            for m in (np.ones(len(unseen), dtype=bool), unseen))
    candidate_everywhere, candidate_unseen = (f1_of(candidate, split.X_test[m], split.y_test[m])
                                              for m in (np.ones(len(unseen), dtype=bool), unseen))
    assert champion_everywhere > candidate_everywhere  # scored on the whole split, the champion would stay
    assert candidate_unseen > champion_unseen  # on reviews neither saw, the candidate is better

    promotion = promote_if_better(MODEL_NAME, candidate, split.X_test, split.y_test)
    assert promotion.promoted, promotion.reason
    assert (f"test F1 {candidate_unseen:.4f} vs champion v{champion.version} {champion_unseen:.4f} on "
            f"{int(unseen.sum())} of {len(unseen)} test reviews that neither model trained on") in promotion.reason


def test_a_champion_that_trained_on_the_whole_test_split_is_not_replaced_blindly(store: Store) -> None:
    split = the_split()
    reviews = load_reviews(SAMPLE)
    champion = registered(reviews.text, reviews.label, STRONG)  # every review, test split included
    promote_if_better(MODEL_NAME, champion, split.X_test, split.y_test)
    candidate = registered(split.X_train, split.y_train, STRONG)
    promotion = promote_if_better(MODEL_NAME, candidate, split.X_test, split.y_test)
    assert not promotion.promoted and f"fewer than {MIN_COMPARED_REVIEWS} test reviews" in promotion.reason
    assert current_champion(MODEL_NAME).version == champion.version


def test_a_champion_without_training_records_is_compared_on_the_whole_split(store: Store) -> None:
    split = the_split()
    champion = registered(split.X_train, split.y_train, FAIR, record_training=False)  # as logged before
    promote_if_better(MODEL_NAME, champion, split.X_test, split.y_test)
    promotion = promote_if_better(MODEL_NAME, registered(split.X_train, split.y_train, STRONG),
                                  split.X_test, split.y_test)
    assert promotion.promoted and "the full test split (the champion predates" in promotion.reason
