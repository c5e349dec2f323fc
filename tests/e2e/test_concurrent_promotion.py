"""Two real processes promote at the same moment, again and again: compare-and-set under the registry's
lock must leave the better model champion every round, and never let both win over one champion.
On an SQLite store the lock is a file lock; on the stack (MLflow server on PostgreSQL) a PostgreSQL
advisory lock, which holds across machines as it does across these processes."""
from __future__ import annotations

import multiprocessing
import os
import uuid

import mlflow
import numpy as np
import pytest

from review_sentiment.constants import CHAMPION, LOCK_URL_ENV, MODEL_NAME
from review_sentiment.orchestration.stack import StackState
from review_sentiment.tracking.promotion import promote_if_better
from review_sentiment.tracking.registry import current_champion
from tests.helpers import STRONG, WEAK, Store, f1_of, protected, registered, the_split


def promote_in_rounds(uri: str, lock_url: str | None, name: str, version: str, rounds: int, barrier,
                      outcomes) -> None:
    """One promoting process: each round, released with the other by the barrier, promotes `version`."""
    if lock_url:
        os.environ[LOCK_URL_ENV] = lock_url
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    split = the_split()
    candidate = mlflow.MlflowClient().get_model_version(name, version)
    for round_ in range(rounds):
        barrier.wait(timeout=120)
        outcomes.put((round_, version, promote_if_better(name, candidate, protected(split)).reason))
        barrier.wait(timeout=120)


def race(uri: str, name: str, rounds: int, lock_url: str | None = None) -> None:
    """A good and a fair candidate against a weak champion, both released together by a barrier, every
    round: without compare-and-set under a lock, the last writer wins, whichever it is."""
    split = the_split()
    noisy = split.y_train.copy()  # fair: the same texts, so the same size and speed as good, some labels wrong
    flipped = np.random.default_rng(1).choice(len(noisy), len(noisy) // 6, replace=False)
    noisy[flipped] = 1 - noisy[flipped]
    weak = registered(split.X_train, split.y_train, WEAK, name=name)
    fair, good = (registered(split.X_train, labels, STRONG, name=name) for labels in (noisy, split.y_train))
    scores = [f1_of(v, split.X_test, split.y_test, name) for v in (weak, fair, good)]
    assert scores == sorted(scores) and len(set(scores)) == 3, scores
    context = multiprocessing.get_context("spawn")
    barrier, outcomes = context.Barrier(3), context.Queue()
    processes = [context.Process(target=promote_in_rounds, args=(uri, lock_url, name, str(v.version), rounds,
                                                                 barrier, outcomes), daemon=True)
                 for v in (fair, good)]
    for process in processes:
        process.start()
    client, champions = mlflow.MlflowClient(), []
    try:
        for _ in range(rounds):
            client.set_registered_model_alias(name, CHAMPION, weak.version)
            barrier.wait(timeout=180)  # both go
            barrier.wait(timeout=180)  # both done
            champions.append(str(current_champion(name).version))
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    reasons = [outcomes.get(timeout=10) for _ in range(2 * rounds)]
    assert [p.exitcode for p in processes] == [0, 0]
    assert champions == [str(good.version)] * rounds, reasons  # 0 worse winners
    over_weak = [round_ for round_, _, reason in reasons if f"promoted over champion v{weak.version}:" in reason
                 and "not promoted" not in reason]
    assert len(over_weak) == len(set(over_weak)), reasons  # 0 rounds where both won over the same champion
    assert all(f"over champion v{good.version}" in reason for _, version, reason in reasons
               if version == str(fair.version) and "not promoted" in reason)


def test_two_processes_promoting_at_once_on_sqlite(store: Store) -> None:
    race(store.uri, MODEL_NAME, rounds=8)


def test_two_processes_promoting_at_once_on_the_stack(stack: StackState, monkeypatch: pytest.MonkeyPatch) -> None:
    environment = stack.environment()
    uri = environment["MLFLOW_TRACKING_URI"]
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(variable, uri)
    monkeypatch.setenv(LOCK_URL_ENV, environment[LOCK_URL_ENV])
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("promotion")
    race(uri, f"Promoters{uuid.uuid4().hex[:8]}", rounds=20, lock_url=environment[LOCK_URL_ENV])
