"""The scheduled retrain as a user starts it: `python ml_orchestration_flipkart.py` starts its own
Prefect server, serves the cron deployment, a scheduled run lands in MLflow and on the dashboard,
Ctrl-C stops it all; a server left behind by a killed CLI is reused, never duplicated."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mlflow

from review_sentiment.constants import RETRAIN_EXPERIMENT
from review_sentiment.orchestration.commands import DEPLOYMENT
from tests.helpers import PROJECT_DIR, rendered, wait_for


@dataclass
class Serving:
    """`python ml_orchestration_flipkart.py --cron CRON` in a folder of its own, its output collected."""

    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, folder: Path, cron: str) -> Serving:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {"PREFECT_HOME": str(folder / ".prefect"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
                "PYTHONFAULTHANDLER": "1"}  # a SIGABRT then prints every thread's stack: see stop()
        process = subprocess.Popen(
            [sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--cron", cron],
            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        serving = cls(process)
        threading.Thread(target=lambda: serving.lines.extend(process.stdout), daemon=True).start()
        return serving

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def dashboard(self) -> tuple[str, int]:
        """The dashboard URL it printed, and its port."""
        wait_for(lambda: self.process.poll() is not None or "Prefect dashboard:" in self.output, 120,
                 "the Prefect server to start")
        assert self.process.poll() is None, self.output
        found = re.search(r"Prefect dashboard: (http://127\.0\.0\.1:(\d+))", self.output)
        return found[1], int(found[2])

    def stop(self) -> bool:
        """Ctrl-C, as a user stops it; True if it exited within 60 s. Otherwise abort it (its stacks go to
        the output) and kill its process group (its flow runs), so a hang is reported, not left running."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
            return True
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            self.process.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return False


def test_served_deployment_runs_on_schedule_shows_on_the_dashboard_and_stops_cleanly(tmp_path: Path) -> None:
    serving = Serving.start(tmp_path, "* * * * *")
    port = None
    try:
        dashboard, port = serving.dashboard()
        completed = completed_flow_runs(f"{dashboard}/api")  # scheduled on the next minute boundary, then run
        wait_for(lambda: completed() or serving.process.poll() is not None, 150, "a scheduled run to complete",
                 interval=1)
        assert serving.process.poll() is None, serving.output
        finished = completed()[0]

        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # the run has finished: the store is complete
        runs = mlflow.search_runs(experiment_names=[RETRAIN_EXPERIMENT])
        run = runs[runs["tags.prefect.flow_run_id"] == finished["id"]]
        assert len(run) == 1 and run.status.iloc[0] == "FINISHED" and run["tags.outcome"].iloc[0] == "registered"

        # The dashboard link it printed works in a browser: its UI is told the real API URL.
        pages = {page: rendered(f"{dashboard}{page}") for page in
                 ("/deployments", "/runs", f"/runs/flow-run/{finished['id']}")}
        assert all("Can't connect to Server API" not in dom for dom in pages.values())
        assert DEPLOYMENT in pages["/deployments"]
        assert "Completed" in pages["/runs"]
        assert finished["name"] in pages[f"/runs/flow-run/{finished['id']}"]
    finally:
        stopped = serving.stop()
        mlflow.set_tracking_uri(None)
        outlived = kill(server_processes(port)) if port else []
    assert stopped, f"still running 60 s after Ctrl-C; its threads when aborted:\n{serving.output[-8000:]}"
    assert serving.process.returncode == 0, serving.output
    assert not outlived, f"the Prefect server on port {port} outlived the CLI (killed pids {outlived})"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"


def test_a_server_left_by_a_killed_cli_is_reused_not_duplicated(tmp_path: Path) -> None:
    """SIGKILL gives the CLI no chance to stop the server it started; the next start must take it over."""
    killed = Serving.start(tmp_path, "0 0 1 1 *")
    dashboard, port = killed.dashboard()
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()
    left = server_processes(port)
    assert left, "the server did not outlive its CLI"  # what a SIGKILL leaves behind
    again = Serving.start(tmp_path, "0 0 1 1 *")
    try:
        assert again.dashboard() == (dashboard, port), again.output
        assert "Reusing the Prefect server left running by a killed run" in again.output
    finally:
        stopped = again.stop()
        outlived = kill(server_processes(port) + left)
    assert stopped and again.process.returncode == 0, again.output
    assert not outlived, f"Prefect servers outlived the second CLI (killed pids {outlived})"


def completed_flow_runs(api: str):
    """The retrain deployment's completed flow runs (the monitor's, served beside it, completes at each full hour)."""
    def runs() -> list[dict]:
        answer = httpx.post(f"{api}/flow_runs/filter", timeout=10,
                            json={"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                                  "deployments": {"name": {"any_": [DEPLOYMENT]}}})
        answer.raise_for_status()
        return answer.json()
    return runs


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


def kill(pids: list[int]) -> list[int]:
    """SIGKILL what is still there (a server runs in a session of its own: killing the CLI's group
    misses it); returns the pids that were."""
    alive = []
    for pid in set(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            alive.append(pid)
    return alive
