"""A local Prefect server for schedules (Prefect's ephemeral API cannot schedule runs), and the
project's Prefect defaults. This module imports nothing of Prefect's, so the orchestration CLI can
apply the defaults before Prefect reads its settings, which it does once, on first import."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from review_sentiment.constants import PROJECT_DIR

DEFAULT_PREFECT_HOME = PROJECT_DIR / ".prefect"


def quiet_prefect_env(env: dict[str, str]) -> dict[str, str]:
    """State inside the project unless PREFECT_HOME says otherwise; no telemetry (offline it only
    logs errors). Values already in `env` win."""
    return {"PREFECT_HOME": str(DEFAULT_PREFECT_HOME), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env}


@dataclass(frozen=True)
class LocalServer:
    """A `prefect server start` process of ours on loopback, in a session of its own."""

    process: subprocess.Popen
    url: str  # what PREFECT_API_URL should say
    log_path: Path

    @classmethod
    def start(cls, env: dict[str, str]) -> LocalServer:
        """Start one and return at once; `wait_healthy` says when it answers (a fresh database takes
        ~14 s to migrate here, an existing one ~5 s), so the caller can do other work meanwhile."""
        port = _free_port()
        log_path = Path(env["PREFECT_HOME"]) / "server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        return cls(process, f"http://127.0.0.1:{port}/api", log_path)

    def wait_healthy(self, timeout: float = 90.0) -> str:
        """The API URL once /health answers 200; RuntimeError naming the log if it dies or stalls."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Prefect server exited with status {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.url
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"Prefect server not healthy after {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


@contextmanager
def prefect_api(startup_timeout: float = 90.0) -> Iterator[str]:
    """Yield PREFECT_API_URL: the user's server if set, else one started here and stopped after."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    server = LocalServer.start(quiet_prefect_env({k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}))
    try:
        yield server.wait_healthy(startup_timeout)
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
