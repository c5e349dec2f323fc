"""`--workers N`: the tuning run is worker w0 and starts N-1 more on this machine. Each is the tuning
script with `--join`, the command a worker on another machine runs too: it loads and cleans the
reviews once, then takes trials from the shared studies until their queues are empty."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from review_sentiment.constants import PROJECT_DIR

if TYPE_CHECKING:
    from review_sentiment.training.tuning_run import TuningSettings

TUNING_SCRIPT = PROJECT_DIR / "sentiment_mlflow_optuna.py"


def worker_command(settings: TuningSettings, storage_url: str) -> list[str]:
    """The tuning script with the same data and flags, joining the studies in `storage_url`."""
    return [sys.executable, str(TUNING_SCRIPT), "--data", str(settings.data), "--text-col", settings.text_col,
            "--rating-col", settings.rating_col, "--models", *settings.models, "--trials", str(settings.trials),
            "--folds", str(settings.folds), "--test-size", str(settings.test_size), "--seed", str(settings.seed),
            "--n-jobs", str(settings.n_jobs), "--experiment", settings.experiment,
            "--registered-model", settings.registered_model, "--storage", storage_url, "--join"]


@contextmanager
def local_workers(command: list[str], count: int) -> Iterator[None]:
    """Run `count` workers w1..wN beside this process. On the way out they are waited for (each stops
    when the queues are empty); if the block fails, they are stopped, and a trial cut short is failed
    and queued again by the heartbeat check of the next run."""
    workers = [subprocess.Popen([*command, "--worker-name", f"w{i}"]) for i in range(1, count + 1)]
    try:
        yield
    except BaseException:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait()
        raise
    for i, worker in enumerate(workers, start=1):
        if worker.wait() != 0:
            print(f"worker w{i} exited with status {worker.returncode}: its trials were run by the others", flush=True)
