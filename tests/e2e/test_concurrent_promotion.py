"""Two real processes promote at the same moment, again and again, on one SQLite store: compare-and-set
must leave the better model champion every time (without it, the last writer wins)."""
from __future__ import annotations

import multiprocessing

import mlflow
import numpy as np

from review_sentiment.constants import CHAMPION, MODEL_NAME
from review_sentiment.tracking.promotion import promote_if_better
from review_sentiment.tracking.registry import current_champion
from tests.helpers import STRONG, WEAK, Store, f1_of, registered, the_split

ROUNDS = 8


def promote_in_rounds(store_uri: str, version: str, barrier, outcomes) -> None:
    """One promoting process: each round, released with the other by the barrier, promotes `version`."""
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_registry_uri(store_uri)
    split = the_split()
    candidate = mlflow.MlflowClient().get_model_version(MODEL_NAME, version)
    for _ in range(ROUNDS):
        barrier.wait(timeout=120)
        outcomes.put((version, promote_if_better(MODEL_NAME, candidate, split.X_test, split.y_test).reason))
        barrier.wait(timeout=120)


def test_two_processes_promoting_at_once_leave_the_better_model_champion(store: Store) -> None:
    """Two real processes, released together by a barrier, promote a good and a fair candidate over a weak
    champion, eight times. Without compare-and-set the last writer wins, whichever it is."""
    split = the_split()
    noisy = split.y_train.copy()  # fair: the same texts, so the same size and speed as good, some labels wrong
    flipped = np.random.default_rng(1).choice(len(noisy), len(noisy) // 6, replace=False)
    noisy[flipped] = 1 - noisy[flipped]
    weak = registered(split.X_train, split.y_train, WEAK)
    fair, good = registered(split.X_train, noisy, STRONG), registered(split.X_train, split.y_train, STRONG)
    scores = [f1_of(v, split.X_test, split.y_test) for v in (weak, fair, good)]
    assert scores == sorted(scores) and len(set(scores)) == 3, scores
    context = multiprocessing.get_context("spawn")
    barrier, outcomes = context.Barrier(3), context.Queue()
    processes = [context.Process(target=promote_in_rounds, args=(store.uri, str(v.version), barrier, outcomes),
                                 daemon=True)
                 for v in (fair, good)]
    for process in processes:
        process.start()
    client, champions = mlflow.MlflowClient(), []
    try:
        for _ in range(ROUNDS):
            client.set_registered_model_alias(MODEL_NAME, CHAMPION, weak.version)
            barrier.wait(timeout=180)  # both go
            barrier.wait(timeout=180)  # both done
            champions.append(str(current_champion(MODEL_NAME).version))
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    reasons = [outcomes.get(timeout=10) for _ in range(2 * ROUNDS)]
    assert [p.exitcode for p in processes] == [0, 0]
    assert champions == [str(good.version)] * ROUNDS, reasons
    assert all(f"vs champion v{good.version}" in reason for version, reason in reasons
               if version == str(fair.version) and "not promoted" in reason)
