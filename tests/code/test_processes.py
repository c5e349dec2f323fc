"""What the stages share about processes: the collector paused while a process imports its libraries."""
from __future__ import annotations

import gc
import sys
import types

import pytest

from review_sentiment.constants import PROJECT_DIR
from review_sentiment.processes import collector_paused


def _tracked(thing: object) -> bool:
    """Whether the collector still looks at `thing` (a frozen object is in none of its generations)."""
    return any(tracked is thing for tracked in gc.get_objects())


def test_in_a_program_of_ours_what_a_paused_block_made_is_left_out_of_later_collections(
        monkeypatch: pytest.MonkeyPatch) -> None:
    program = types.ModuleType("__main__")
    program.__file__ = str(PROJECT_DIR / "sentiment_mlflow_optuna.py")
    monkeypatch.setitem(sys.modules, "__main__", program)
    try:
        with collector_paused():
            assert not gc.isenabled()
            made = [[index] for index in range(10)]
        assert gc.isenabled()
        assert not _tracked(made)
    finally:
        gc.unfreeze()  # this test process is pytest's: its objects go back to the collector


def test_called_in_from_a_program_not_ours_a_paused_block_only_pauses() -> None:
    """A notebook or the tests calling a script's `main`: nothing of theirs is frozen for good."""
    with collector_paused():
        assert not gc.isenabled()
        made = [[index] for index in range(10)]
    assert gc.isenabled()
    assert _tracked(made)


def test_the_collector_is_left_as_it_was_when_the_block_fails() -> None:
    gc.disable()
    try:
        with pytest.raises(KeyError), collector_paused():
            raise KeyError("a failed import")
        assert not gc.isenabled()
    finally:
        gc.enable()
