"""Child runs are written beside the trials: in order, on one other thread, and a failure is not lost."""
from __future__ import annotations

import threading

import pytest

from review_sentiment.tracking.trial_runs import written_beside


def test_logs_run_in_order_on_one_thread_beside_the_caller_and_all_are_done_when_the_block_ends() -> None:
    done: list[tuple[int, str]] = []
    with written_beside() as write:
        for number in range(50):
            write(lambda number=number: done.append((number, threading.current_thread().name)))
    assert [number for number, _ in done] == list(range(50))
    assert len({thread for _, thread in done}) == 1 and done[0][1] != threading.current_thread().name


def test_a_failed_log_is_raised_by_the_next_write_or_when_the_block_ends() -> None:
    done: list[int] = []

    def fails() -> None:
        raise ConnectionError("tracking server down")

    with pytest.raises(ConnectionError, match="server down"), written_beside() as write:
        write(lambda: done.append(1))
        write(fails)
        write(lambda: done.append(3))
    assert done == [1]  # the third was never started
    with pytest.raises(ConnectionError, match="server down"), written_beside() as write:
        write(lambda: done.append(4))
        write(fails)
    assert done == [1, 4]


def test_a_log_waits_for_the_one_before_it_so_none_falls_more_than_one_behind() -> None:
    started, release = threading.Event(), threading.Event()
    with written_beside() as write:
        write(lambda: (started.set(), release.wait(10)))
        started.wait(10)
        waiter = threading.Thread(target=write, args=(lambda: None,))
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # the second write waits while the first is still being written
        release.set()
        waiter.join(10)
        assert not waiter.is_alive()
