"""The scheduled retrain as a user starts it: `python ml_orchestration_flipkart.py` starts its own
Prefect server, serves the cron deployment, a scheduled run lands in MLflow, Ctrl-C stops it all."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import mlflow

from review_sentiment.constants import RETRAIN_EXPERIMENT
from tests.helpers import PROJECT_DIR, wait_for


def test_served_deployment_runs_on_schedule_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / ".prefect"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "PYTHONFAULTHANDLER": "1"}  # a SIGABRT then prints every thread's stack: see stop()
    serving = subprocess.Popen(
        [sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--cron", "* * * * *"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(serving.stdout), daemon=True)
    reader.start()
    port = None
    try:
        wait_for(lambda: serving.poll() is not None or any("Prefect dashboard:" in line for line in lines), 120,
                 "the Prefect server to start")
        assert serving.poll() is None, "".join(lines)
        dashboard = next(re.search(r"Prefect dashboard: (http://127\.0\.0\.1:(\d+))", line)
                         for line in lines if "Prefect dashboard:" in line)
        api, port = f"{dashboard[1]}/api", int(dashboard[2])
        completed = completed_flow_runs(api)  # scheduled on the next minute boundary, then run
        wait_for(lambda: completed() or serving.poll() is not None, 150, "a scheduled run to complete", interval=1)
        assert serving.poll() is None, "".join(lines)
        flow_run_id = completed()[0]

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])  # the run has finished: the store is complete
        runs = mlflow.search_runs(experiment_names=[RETRAIN_EXPERIMENT])
        run = runs[runs["tags.prefect.flow_run_id"] == flow_run_id]
        assert len(run) == 1 and run.status.iloc[0] == "FINISHED" and run["tags.outcome"].iloc[0] == "registered"
    finally:
        stopped = stop(serving)
        reader.join(timeout=10)
        mlflow.set_tracking_uri(None)
        outlived = server_processes(port) if port else []
        for pid in outlived:  # it runs in a session of its own: killing the CLI's group misses it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    output = "".join(lines)
    assert stopped, f"still running 60 s after Ctrl-C; its threads when aborted:\n{output[-8000:]}"
    assert serving.returncode == 0, output
    assert not outlived, f"the Prefect server on port {port} outlived the CLI (killed pids {outlived})"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


def stop(serving: subprocess.Popen) -> bool:
    """Ctrl-C, as a user stops it; True if it exited within 60 s. Otherwise abort it (its stacks go to
    the output) and kill its process group (its flow runs), so a hang is reported, not left running."""
    serving.send_signal(signal.SIGINT)
    try:
        serving.wait(timeout=60)
        return True
    except subprocess.TimeoutExpired:
        serving.send_signal(signal.SIGABRT)
        serving.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # nothing of its group may be left
            os.killpg(serving.pid, signal.SIGKILL)
        return False


def completed_flow_runs(api: str):
    def ids() -> list[str]:
        answer = httpx.post(f"{api}/flow_runs/filter", timeout=10,
                            json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})
        answer.raise_for_status()
        return [run["id"] for run in answer.json()]
    return ids


def server_processes(port: int) -> list[int]:
    """Processes whose command line is `prefect server start ... --port PORT`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # not a process, or it ended while we looked
        if b"server" in argv and b"start" in argv and str(port).encode() in argv:
            found.append(int(proc.name))
    return found
