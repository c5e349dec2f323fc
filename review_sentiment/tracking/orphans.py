"""Runs left RUNNING by a killed process: MLflow has no run heartbeat, so a `kill -9` during tuning
leaves the run RUNNING for good. Each run of ours records which process writes it (host, pid and that
process's start mark: see `processes`); the next start marks the runs whose
process is gone KILLED, with their child runs. Runs written from other hosts are left alone: their
process cannot be checked from here.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import mlflow
from mlflow.entities import Run, RunStatus

from review_sentiment.processes import running, this_process

HOST, PID, STARTED = "process.host", "process.pid", "process.started"


def process_tags() -> dict[str, str]:
    """Tags naming the process that writes a run, for `close_orphaned_runs` to check later."""
    pid, started = this_process()
    return {HOST: socket.gethostname(), PID: str(pid), STARTED: started}


def live_writer(run_id: str) -> int | None:
    """The pid of the process on this host that writes the run, if it still runs."""
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    return int(tags[PID]) if tags.get(HOST) == socket.gethostname() and _alive(tags) else None


def writer_may_be_alive(run_id: str, since: float, grace_seconds: float) -> bool:
    """Whether the process writing the run may still be at work: alive on this host, or on another host
    (which cannot be checked from here) less than `grace_seconds` after `since` (a Unix time)."""
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    if tags.get(HOST) == socket.gethostname():
        return _alive(tags)
    return time.time() - since < grace_seconds


def adopt(run_id: str) -> None:
    """A run this process resumes: RUNNING again, and written by this process from now on."""
    client = mlflow.MlflowClient()
    for tag, value in process_tags().items():
        client.set_tag(run_id, tag, value)
    client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))


@dataclass(frozen=True)
class Orphan:
    run: Run
    children: int

    def __str__(self) -> str:
        tags = self.run.data.tags
        return (f"{tags.get('mlflow.runName', self.run.info.run_id)} ({self.run.info.run_id[:8]}, pid {tags[PID]}, "
                f"{self.children} child run{'s' * (self.children != 1)})")


def close_orphaned_runs(experiment: str) -> list[Orphan]:
    """Mark KILLED the RUNNING runs of `experiment` whose writing process on this host is gone."""
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return []
    client = mlflow.MlflowClient()
    running = client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'")
    orphans = []
    for run in running:
        if run.data.tags.get(HOST) != socket.gethostname() or _alive(run.data.tags):
            continue
        children = [r for r in running if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
        for stale in (*children, run):
            client.set_terminated(stale.info.run_id, RunStatus.to_string(RunStatus.KILLED))
        orphans.append(Orphan(run, len(children)))
    return orphans


def closed_orphans_line(orphans: list[Orphan]) -> str | None:
    """The one line a start prints when it closed runs, else None."""
    if not orphans:
        return None
    return (f"Marked KILLED {len(orphans)} run{'s' * (len(orphans) != 1)} left RUNNING by a process that is gone: "
            + "; ".join(map(str, orphans)))


def _alive(tags: dict[str, str]) -> bool:
    try:
        return running(int(tags[PID]), tags[STARTED]) is not None
    except (KeyError, ValueError):
        return False
