"""`python serve_api.py` as a real process for the e2e tests, and real clients to load it with."""
from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers import PROJECT_DIR, free_port, wait_for


@dataclass
class Service:
    """`python serve_api.py` on a free port, once it answers. One a failed test left running is killed at
    its teardown, as every process a failed test leaves (tests/conftest.py)."""

    process: subprocess.Popen
    port: int
    log_path: Path
    client: httpx.Client

    @classmethod
    def start(cls, store_uri: str | None, workdir: Path, *args: str, env: dict[str, str] | None = None) -> Service:
        """`store_uri` None: MLflow's default for `workdir`; `env`: the environment it starts from (ours)."""
        port = free_port()
        log_path = workdir / f"server-{port}.log"
        store = {} if store_uri is None else {"MLFLOW_TRACKING_URI": store_uri, "MLFLOW_REGISTRY_URI": store_uri}
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, str(PROJECT_DIR / "serve_api.py"), "--port", str(port), *args],
                cwd=workdir, env=dict(os.environ if env is None else env, **store),
                stdout=log, stderr=subprocess.STDOUT)
        service = cls(process, port, log_path, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30))
        wait_for(service._answers, timeout=60, what="the server to answer")
        return service

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self, how: signal.Signals = signal.SIGINT) -> int:
        self.client.close()
        self.process.send_signal(how)
        return self.process.wait(timeout=60)

    def _answers(self) -> bool:
        assert self.process.poll() is None, f"the server exited with status {self.process.returncode}: {self.output}"
        try:
            self.client.get("/health")
            return True
        except httpx.TransportError:
            return False


@contextmanager
def running_server(store_uri: str | None, workdir: Path, *args: str,
                   env: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    """The service for a block, stopped with Ctrl-C (SIGINT) after: it must exit 0 and log no error."""
    service = Service.start(store_uri, workdir, *args, env=env)
    try:
        yield service.client
    finally:
        code = service.stop()
        output = service.output
        assert code == 0, output
        assert "Traceback" not in output, output
        assert not re.search(r"^(ERROR|CRITICAL):", output, re.MULTILINE), output  # a log record at error level


@dataclass
class Load:
    """Clients posting single reviews as fast as answers come, each on its own kept-alive connection,
    until stopped or the server goes away; what was answered 200 is kept, id by id."""

    port: int
    texts: list[str]
    clients: int = 8
    answered: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        self._threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(self.clients)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, n: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = n
        while not self._stop.is_set():
            body = json.dumps({"reviews": [self.texts[i % len(self.texts)]]})
            i += self.clients
            try:
                connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                return  # the server is gone
            with self._lock:
                self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                if response.status == 200:
                    self.answered.extend(p["id"] for p in json.loads(payload)["predictions"])
