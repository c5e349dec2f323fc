"""What the stages share about processes: the collector paused while a process imports its libraries."""
from __future__ import annotations

import gc

import pytest

from review_sentiment.processes import collector_paused


def test_what_a_paused_block_made_is_left_out_of_later_collections() -> None:
    """Nothing is collected while the block runs; what it made is frozen (later collections skip it); the
    collector is then as it was, whether the block ended or raised."""
    frozen = gc.get_freeze_count()
    with collector_paused():
        assert not gc.isenabled()
        made = [[index] for index in range(1000)]  # containers the collector tracks
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(made)
    gc.disable()
    try:
        with pytest.raises(KeyError), collector_paused():
            raise KeyError("a failed import")
        assert not gc.isenabled()
    finally:
        gc.enable()
