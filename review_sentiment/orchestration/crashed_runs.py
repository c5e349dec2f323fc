"""Flow runs left RUNNING by a killed process: a `kill -9` of `--once` (or of a check) leaves its flow run
RUNNING on the Prefect server for good. Each of our flow runs records which process runs it (host, pid
and the process's start mark, in the run's `infrastructure_pid`); the next flow of ours to start marks
Crashed the RUNNING ones whose process on this host is gone. Runs from other hosts are left alone.
"""
from __future__ import annotations

import socket
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run
from prefect.states import Crashed

from review_sentiment.constants import MONITORING_FLOW, RETRAIN_FLOW
from review_sentiment.processes import running, this_process


def record_process() -> None:
    """Name this process on the current flow run, for `mark_crashed_runs` in a later one."""
    pid, started = this_process()
    run_id = flow_run.get_id()
    assert run_id is not None  # called inside a flow run
    with get_client(sync_client=True) as client:
        client.update_flow_run(UUID(run_id), infrastructure_pid=f"{socket.gethostname()}:{pid}:{started}")


def mark_crashed_runs() -> list[str]:
    """Mark Crashed our RUNNING flow runs whose process on this host is gone; a line per run marked."""
    lines, me = [], str(flow_run.get_id())
    with get_client(sync_client=True) as client:
        stuck = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RETRAIN_FLOW, MONITORING_FLOW])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.RUNNING]))))
        for run in stuck:
            host, _, process = (run.infrastructure_pid or "").partition(":")
            pid, _, started = process.partition(":")
            if str(run.id) == me or host != socket.gethostname() or not started:
                continue
            if running(int(pid), started) is None:
                client.set_flow_run_state(run.id, Crashed(message=f"its process {pid} on {host} is gone"), force=True)
                lines.append(f"Marked Crashed flow run {run.name} ({run.id}): its process {pid} is gone")
    return lines
