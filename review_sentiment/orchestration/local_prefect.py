"""A local Prefect server for schedules (Prefect's ephemeral API cannot schedule runs), and the
project's Prefect defaults. This module imports nothing of Prefect's, so the orchestration CLI can
apply the defaults before Prefect reads its settings, which it does once, on first import."""
from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from review_sentiment.constants import PROJECT_DIR
from review_sentiment.processes import running, start_detached, start_mark, stop_group, this_process, wait_http

DEFAULT_PREFECT_HOME = PROJECT_DIR / ".prefect"
STATE_FILE = "server.json"  # in PREFECT_HOME: which process serves it, since when, at which URL


def quiet_prefect_env(env: dict[str, str]) -> dict[str, str]:
    """State inside the project unless PREFECT_HOME says otherwise; no telemetry (offline it only
    logs errors). Values already in `env` win."""
    return {"PREFECT_HOME": str(DEFAULT_PREFECT_HOME), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env}


@dataclass(frozen=True)
class LocalServer:
    """A `prefect server start` process of ours on loopback, in a session of its own (so Ctrl-C in the
    terminal reaches only the CLI, which stops it). `server.json` in its PREFECT_HOME records it and the
    CLI that owns it, so the next start can take over a server whose owner was killed."""

    process: psutil.Process
    url: str  # what PREFECT_API_URL should say
    home: Path

    @classmethod
    def start(cls, env: dict[str, str], record: bool = True) -> LocalServer:
        """Start one and return at once; `wait_healthy` says when it answers (a fresh database takes
        ~14 s to migrate here, an existing one ~5 s), so the caller can do other work meanwhile. Its
        web UI is told the real API URL (by default it points the browser at port 4200)."""
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        home = Path(env["PREFECT_HOME"])
        process = start_detached([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                  "--port", str(port)], {**env, "PREFECT_UI_API_URL": url}, home / "server.log")
        server = cls(process, url, home)
        if record:
            server.own()
        return server

    @classmethod
    def orphaned(cls, home: Path) -> LocalServer | None:
        """The server recorded here if it still runs and the CLI that owned it does not (it was killed)."""
        state = _recorded(home)
        if state is None:
            return None
        if running(*state["owner"]) is not None:
            return None  # another CLI still serves from this folder: its server is not ours to take
        server = running(*state["server"])
        if server is None:
            (home / STATE_FILE).unlink(missing_ok=True)
            return None
        return cls(server, state["url"], home)

    def own(self) -> None:
        """Record this server as this process's, for the next start to find if we are killed."""
        state = {"server": [self.process.pid, start_mark(self.process)], "owner": list(this_process()),
                 "url": self.url}
        (self.home / STATE_FILE).write_text(json.dumps(state))

    def wait_healthy(self, timeout: float = 90.0) -> str:
        """The API URL once /health answers 200; RuntimeError naming the log if it dies or stalls."""
        wait_http(f"{self.url}/health", self.process, "Prefect server", self.home / "server.log", timeout)
        return self.url

    def stop(self) -> None:
        """SIGTERM to its process group (it leads one), SIGKILL after 15 s; its record goes if it is ours."""
        stop_group(self.process)
        state = _recorded(self.home)
        if state is not None and state["server"][0] == self.process.pid:
            (self.home / STATE_FILE).unlink(missing_ok=True)


@contextmanager
def prefect_api(startup_timeout: float = 90.0) -> Iterator[str]:
    """Yield PREFECT_API_URL: the user's server if set, else a local one, stopped after. A server whose
    CLI was killed is reused when it answers, stopped when it does not, never duplicated; while another
    live CLI serves from the same folder, this one starts a server of its own, as before."""
    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    env = quiet_prefect_env({k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"})
    home = Path(env["PREFECT_HOME"])
    server = LocalServer.orphaned(home)
    if server is not None:
        try:
            server.wait_healthy(timeout=10)
            server.own()
            print(f"Reusing the Prefect server left running by a killed run (pid {server.process.pid})", flush=True)
        except RuntimeError:
            server.stop()
            server = None
    if server is None:
        server = LocalServer.start(env, record=_recorded(home) is None)
    try:
        yield server.wait_healthy(startup_timeout)
    finally:
        server.stop()


def _recorded(home: Path) -> dict | None:
    try:
        state = json.loads((home / STATE_FILE).read_text())
        return state if {"server", "owner", "url"} <= state.keys() else None
    except (OSError, ValueError, AttributeError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
