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
from pathlib import Path

from review_sentiment.constants import PROJECT_DIR

DEFAULT_PREFECT_HOME = PROJECT_DIR / ".prefect"


def quiet_prefect_env(env: dict[str, str]) -> dict[str, str]:
    """State inside the project unless PREFECT_HOME says otherwise; no telemetry (offline it only
    logs errors). Values already in `env` win."""
    return {"PREFECT_HOME": str(DEFAULT_PREFECT_HOME), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env}


@contextmanager
def prefect_api(startup_timeout: float = 90.0) -> Iterator[str]:
    """Yield PREFECT_API_URL: the user's server if set, else one started here and stopped after."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = quiet_prefect_env({k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    log_path = Path(env["PREFECT_HOME"]) / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        _wait_healthy(url, server, startup_timeout, log_path)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_healthy(url: str, server: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"Prefect server exited with status {server.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"Prefect server not healthy after {timeout:.0f}s; see {log_path}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
