"""`--workers N`: the tuning run is worker w0 and forks N-1 more once the reviews are loaded, split and
cleaned, so a worker starts trials at once, on the same data, without loading or cleaning it again.
Each opens its own connections (it never uses the ones this process had open when it forked) and runs
what `--join` runs on another machine: it waits for the run's studies, then takes trials until their
studies have no trial left to claim."""
from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import mlflow

from review_sentiment.databases import sqlite_without_fsync_per_commit
from review_sentiment.processes import INTERRUPTED, name_this_process
from review_sentiment.training.journal import JournalLost


@contextmanager
def local_workers(work: Callable[[str], None], count: int) -> Iterator[None]:
    """Run `work(name)` in `count` forked workers w1..wN beside this process. On the way out they are
    waited for (each stops when no trial is left to claim); if the block fails, they are stopped, and a
    trial cut short is failed and queued again by the heartbeat check of the next run."""
    sys.stdout.flush()  # a forked worker would print again what this process had not yet written
    sys.stderr.flush()
    fork = multiprocessing.get_context("fork")
    workers = [fork.Process(target=_quietly, args=(work, f"w{i}"), name=f"w{i}") for i in range(1, count + 1)]
    for worker in workers:
        worker.start()
    try:
        yield
    except BaseException:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join()
        raise
    for worker in workers:
        worker.join()
        if worker.exitcode != 0:
            print(f"worker {worker.name} exited with status {worker.exitcode}: its trials were run by the others",
                  flush=True)


def parent_alive() -> bool:
    """In a forked worker: whether the tuning run that started it still runs (else it claims no more trials).
    Asked of the process's parent, not of multiprocessing's pipe to it: every process the run forked later
    (the other workers, fold processes) holds that pipe open, so it looked alive after a kill -9."""
    parent = multiprocessing.parent_process()
    return parent is None or os.getppid() == parent.pid


def _quietly(work: Callable[[str], None], name: str) -> None:
    """Ctrl-C reaches every worker of the terminal's process group: the run reports it, not each worker.
    A journal that lost logs (a crashed PostgreSQL) is a line, as the run reports it, not a traceback.
    Its connections to an SQLite store are closed as it ends: the last process to close one removes the
    store's -wal and -shm files."""
    name_this_process(name)
    try:
        with sqlite_without_fsync_per_commit(mlflow.get_tracking_uri()):
            work(name)
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED)
    except JournalLost as err:
        print(f"error: worker {name}: {err}", file=sys.stderr)
        sys.exit(1)
