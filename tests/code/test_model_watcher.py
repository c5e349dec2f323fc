"""The watcher against a real registry: what it serves and says when the registry cannot help."""
from __future__ import annotations

import logging

from review_sentiment.serving.model_watcher import ModelWatcher
from review_sentiment.tracking.model_uri import ModelRef
from tests.helpers import Store


def test_a_missing_version_makes_it_unready_and_is_logged_once(store: Store, caplog) -> None:
    watcher = ModelWatcher(ModelRef.parse("models:/NoSuchModel/3"), None, poll_seconds=1)
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        watcher.refresh()
        watcher.refresh()
    assert watcher.current.champion is None
    assert watcher.current.problem.startswith("could not load models:/NoSuchModel/3")
    assert len([r for r in caplog.records if "Could not refresh the champion" in r.getMessage()]) == 1


def test_an_unset_alias_says_what_is_missing(store: Store) -> None:
    watcher = ModelWatcher(ModelRef.parse("models:/FlipkartSentimentModel@champion"), None, 1)
    watcher.refresh()
    assert watcher.current.problem == "no version of FlipkartSentimentModel holds alias 'champion' yet"

