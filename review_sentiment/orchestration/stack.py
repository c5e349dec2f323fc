"""A shared stack on one machine: PostgreSQL, an MLflow tracking server and a Prefect server on it.

Everything lives in one folder (default `.stack/`): the PostgreSQL cluster, the MLflow artifacts
(served through the tracking server, so a client needs only its URL), Prefect's home, the logs, and
`stack.json` with the ports, the password and which processes serve. `up` is idempotent: it starts
what is not running and keeps the data; `down` stops everything; `status` says what runs where.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user and
its commands run as that user. The databases are reached over TCP with a password (scram-sha-256).
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

import psutil

from review_sentiment.constants import LOCK_URL_ENV, QUIET_MLFLOW_ENV, TRACKING_DB_ENV
from review_sentiment.databases import sqlalchemy_url
from review_sentiment.processes import (
    leaderless_group,
    running,
    start_detached,
    start_mark,
    stop_group,
    stop_members,
    wait_http,
)

POSTGRES_BINS = [Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
DATABASES = ("mlflow", "optuna", "prefect", "predictions")
USER = "review_sentiment"
STATE = "stack.json"
_MAKING = "postgres.making-"  # the cluster while initdb makes it (`_init_cluster`)
INSTALL_HINT = ("PostgreSQL server binaries not found (looked for initdb in $PG_BIN, /usr/lib/postgresql/*/bin and "
                "on PATH): install them, e.g. `apt-get install postgresql-15` (Debian/Ubuntu) or "
                "`brew install postgresql@15` (macOS), or set PG_BIN to the folder holding initdb and pg_ctl")


class Ports(TypedDict):
    """The stack's ports, by their `StackState` field names."""
    postgres_port: int
    mlflow_port: int
    prefect_port: int


DEFAULT_HOST = "127.0.0.1"
# MLflow's own default is 5000, where `mlflow ui` on a local store listens: the stack's server keeps off it.
DEFAULT_PORTS: Ports = {"postgres_port": 55432, "mlflow_port": 5050, "prefect_port": 4200}
PORT_FLAGS = {"postgres_port": ("PostgreSQL", "--postgres-port"), "mlflow_port": ("the MLflow server", "--mlflow-port"),
              "prefect_port": ("the Prefect server", "--prefect-port")}


class StackError(RuntimeError):
    """The stack cannot do what was asked: one line that says why."""


@dataclass
class StackState:
    host: str
    postgres_port: int
    mlflow_port: int
    prefect_port: int
    password: str
    mlflow: list[int | str] | None = None  # [pid, start mark] of the server process, while it runs
    prefect: list[int | str] | None = None

    @property
    def address(self) -> str:
        """Where clients reach the stack: this machine's name when it listens on every interface."""
        return socket.gethostname() if self.host in ("0.0.0.0", "::") else self.host

    def postgres_url(self, database: str) -> str:
        return f"postgresql://{USER}:{self.password}@{self.address}:{self.postgres_port}/{database}"

    def environment(self) -> dict[str, str]:
        """What clients export to use the stack (the entry scripts read these)."""
        return {
            "MLFLOW_TRACKING_URI": f"http://{self.address}:{self.mlflow_port}",
            "PREFECT_API_URL": f"http://{self.address}:{self.prefect_port}/api",
            "OPTUNA_STORAGE": self.postgres_url("optuna"),
            "REVIEW_SENTIMENT_PREDICTION_LOG": self.postgres_url("predictions"),
            LOCK_URL_ENV: self.postgres_url("mlflow"),  # alias moves lock on the registry's own database
            TRACKING_DB_ENV: self.postgres_url("mlflow"),  # the server's own: child runs are inserted there
        }


def up(folder: Path, host: str | None = None, ports: dict[str, int] | None = None) -> StackState:
    """Start what is not running. `host` and `ports` (keys of DEFAULT_PORTS) given here replace the ones
    the folder saved, for whatever is not running yet; what is not given keeps the saved value (or the
    default, the first time). A port in use by anything else fails before anything starts or is saved."""
    folder = folder.resolve()  # PostgreSQL's commands run from / (its user may not enter the working folder)
    pg = _postgres_bin()
    saved = _load(folder)
    state = saved or StackState(DEFAULT_HOST, **DEFAULT_PORTS, password=secrets.token_urlsafe(18))
    running = {"postgres_port": saved is not None and _postgres_running(pg, folder),
               "mlflow_port": _server(state.mlflow) is not None, "prefect_port": _server(state.prefect) is not None}
    _apply(state, host, ports or {}, running)
    folder.mkdir(parents=True, exist_ok=True)
    _save(folder, state)  # before the cluster exists: a failed first `up` must not leave it with a lost password
    if not (folder / "postgres" / "PG_VERSION").exists():
        _init_cluster(pg, folder, state)
    if not _postgres_running(pg, folder):
        _run_postgres(pg, folder, ["pg_ctl", "start", "-w", "-t", "60", "-D", str(folder / "postgres"),
                                   "-l", str(folder / "logs" / "postgres.log"),
                                   "-o", f"-p {state.postgres_port} -k '' -c listen_addresses={state.host}"])
    _create_databases(state)
    _save(folder, state)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))} | {
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # a client's settings must not leak into the servers
        **QUIET_MLFLOW_ENV}  # no telemetry (its UI would fetch MLflow's config): nothing reaches out
    if _server(state.mlflow) is None:
        mlflow = start_detached(
            [sys.executable, "-m", "mlflow", "server", "--host", state.host, "--port", str(state.mlflow_port),
             "--serve-artifacts", "--artifacts-destination", str((folder / "artifacts").resolve()),
             "--workers", "1", *_allowed_hosts(state)],
            env | {"MLFLOW_BACKEND_STORE_URI": sqlalchemy_url(state.postgres_url("mlflow"))},  # not in `ps`
            folder / "logs" / "mlflow.log")
        state.mlflow = [mlflow.pid, start_mark(mlflow)]
        _save(folder, state)
    if _server(state.prefect) is None:
        prefect_env = env | {
            "PREFECT_HOME": str((folder / "prefect").resolve()), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_DATABASE_CONNECTION_URL": state.postgres_url("prefect").replace(
                "postgresql://", "postgresql+asyncpg://", 1),
            "PREFECT_UI_API_URL": state.environment()["PREFECT_API_URL"]}
        prefect = start_detached([sys.executable, "-m", "prefect", "server", "start", "--host", state.host,
                                  "--port", str(state.prefect_port)], prefect_env, folder / "logs" / "prefect.log")
        state.prefect = [prefect.pid, start_mark(prefect)]
        _save(folder, state)
    env_urls = state.environment()
    for name, process, url in (("MLflow server", _server(state.mlflow), f"{env_urls['MLFLOW_TRACKING_URI']}/health"),
                               ("Prefect server", _server(state.prefect), f"{env_urls['PREFECT_API_URL']}/health")):
        if process is None:
            raise StackError(f"{name} exited at start; see {folder / 'logs'}")
        wait_http(url, process, name, folder / "logs", timeout=120)
    return state


def down(folder: Path) -> list[str]:
    """Stop the servers, then PostgreSQL; the data stays. Returns what was stopped."""
    folder = folder.resolve()
    state = _load(folder)
    if state is None:
        return []
    stopped = []
    for name in ("mlflow", "prefect"):
        recorded = getattr(state, name)
        sig = signal.SIGINT if name == "prefect" else signal.SIGTERM  # Prefect's server shuts down cleanly on
        # SIGINT; SIGTERM ends it on the spot
        if (process := _server(recorded)) is not None:
            stop_group(process, sig)
            stopped.append(name)
        elif recorded and (left := leaderless_group(int(recorded[0]))):
            # its leader killed on its own, the MLflow server's uvicorn went on holding the port (a fault probe)
            stop_members(int(recorded[0]), left, sig)
            stopped.append(name)
        setattr(state, name, None)
    _save(folder, state)
    pg = _postgres_bin()
    if _postgres_running(pg, folder):
        _run_postgres(pg, folder, ["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(folder / "postgres")])
        stopped.append("postgres")
    return stopped


def status(folder: Path) -> list[tuple[str, str, str]]:
    """(service, running or stopped, where) for each part of the stack."""
    folder = folder.resolve()
    state = _load(folder)
    if state is None:
        return [(name, "not set up", f"run `up` to create {folder}") for name in ("postgres", "mlflow", "prefect")]
    urls = state.environment()
    pg_up = _postgres_running(_postgres_bin(), folder)
    return [
        ("postgres", _word(pg_up), f"{state.host}:{state.postgres_port}, data in {folder / 'postgres'}"),
        ("mlflow", _word(_server(state.mlflow) is not None), urls["MLFLOW_TRACKING_URI"]),
        ("prefect", _word(_server(state.prefect) is not None), urls["PREFECT_API_URL"]),
    ]


def environment(folder: Path) -> dict[str, str]:
    state = _load(folder)
    if state is None:
        raise StackError(f"no stack in {folder}: run `python stack.py up` first")
    return state.environment()


def _apply(state: StackState, host: str | None, ports: dict[str, int], running: dict[str, bool]) -> None:
    """Take the host and ports asked for, refusing to move a running part or to start on a busy port."""
    for key, port in ports.items():
        name, flag = PORT_FLAGS[key]
        if running[key] and port != getattr(state, key):
            raise StackError(f"{name} is running on port {getattr(state, key)}: `python stack.py down` first to "
                             f"move it to {flag} {port}")
        setattr(state, key, port)
    if host is not None and host != state.host:
        if any(running.values()):
            raise StackError(f"the stack is running on {state.host}: `python stack.py down` first to move it to "
                             f"--host {host}")
        state.host = host
    for key, (name, flag) in PORT_FLAGS.items():
        if not running[key] and not _free(state.host, getattr(state, key)):
            raise StackError(f"port {getattr(state, key)} on {state.host} is in use by another program, so "
                             f"{name} cannot listen there: choose another with {flag}")


def _free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as servers do, past connections in TIME_WAIT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _allowed_hosts(state: StackState) -> list[str]:
    """MLflow answers only requests naming a local or private host; off loopback, also this machine's name."""
    if state.address == state.host:
        return []
    names = [state.address, "localhost", "127.0.0.1"]
    return ["--allowed-hosts", ",".join(f"{name}{port}" for name in names for port in ("", ":*"))]


def _word(up: bool) -> str:
    return "running" if up else "stopped"


def _server(recorded: list[int | str] | None) -> psutil.Process | None:
    return running(int(recorded[0]), recorded[1]) if recorded else None


def _postgres_bin() -> Path:
    candidates = [Path(os.environ["PG_BIN"])] if os.environ.get("PG_BIN") else []
    if found := shutil.which("initdb"):
        candidates.append(Path(found).resolve().parent)
    for folder in [*candidates, *POSTGRES_BINS]:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise StackError(INSTALL_HINT)


def _as_postgres_user() -> str | None:
    """PostgreSQL will not run as root: then its files and processes belong to the `postgres` user."""
    return "postgres" if os.geteuid() == 0 else None


def _run_postgres(pg: Path, folder: Path, command: list[str]) -> None:
    user = _as_postgres_user()
    result = subprocess.run([str(pg / command[0]), *command[1:]], user=user, group=user,
                            extra_groups=[] if user else None, cwd="/", capture_output=True, text=True)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        log = folder / "logs" / "postgres.log"
        raise StackError(f"{command[0]} {command[1]} failed: {_cause(log) or said[-1]} (log: {log})")


def _cause(log: Path) -> str | None:
    """The server's last FATAL or ERROR line (pg_ctl itself says only "Examine the log output")."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    causes = [line.split(":  ", 1)[-1] for line in lines if "FATAL:" in line or "ERROR:" in line]
    return causes[-1] if causes else None


def _postgres_running(pg: Path, folder: Path) -> bool:
    if not (folder / "postgres" / "PG_VERSION").exists():
        return False
    user = _as_postgres_user()
    result = subprocess.run([str(pg / "pg_ctl"), "status", "-D", str(folder / "postgres")], user=user, group=user,
                            extra_groups=[] if user else None, cwd="/", capture_output=True)
    return result.returncode == 0


def _init_cluster(pg: Path, folder: Path, state: StackState) -> None:
    """Make the cluster in a folder of its own, named `postgres` only once it is whole: an `up` stopped
    meanwhile (Ctrl-C, kill) leaves no `postgres` folder, empty or half-made, to block every later `up`
    (a fault probe: 4 of 6 interrupted first `up`s did). What such an `up` left is removed here."""
    data, logs = folder / "postgres", folder / "logs"
    for left in folder.glob(f"{_MAKING}*"):
        _stop_initdb_in(left)
        shutil.rmtree(left, ignore_errors=True)
    making = folder / f"{_MAKING}{secrets.token_hex(4)}"  # a name of its own: a killed `up`'s initdb may still run
    making.mkdir(mode=0o700)
    logs.mkdir(exist_ok=True)
    password_file = folder / "postgres.pw"
    _write_private(password_file, state.password)
    if (user := _as_postgres_user()) is not None:
        if closed := [p for p in folder.resolve().parents if not p.stat().st_mode & stat.S_IXOTH]:
            raise StackError(f"the postgres user cannot reach {folder}: {closed[0]} is closed to other users "
                             f"(chmod o+x {closed[0]}, or choose another --dir)")
        for path in (making, logs, password_file):
            shutil.chown(path, user)
    try:
        _run_postgres(pg, folder, ["initdb", "-D", str(making), "-U", USER, f"--pwfile={password_file}",
                                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                   "--locale=C.UTF-8"])
        with (making / "pg_hba.conf").open("a") as hba:  # workers on other machines, when --host is not loopback
            hba.write("host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
        making.rename(data)  # onto an empty `postgres` an `up` before this change left, too
    except BaseException:
        shutil.rmtree(making, ignore_errors=True)
        raise
    finally:
        password_file.unlink()


def _stop_initdb_in(making: Path) -> None:
    """Kill an initdb a killed `up` left making a cluster in `making` (it outlives `up`): removed under it,
    the folder could get a new file between the removal's last listing and its end, and stay."""
    found = [p for p in psutil.process_iter(["cmdline"]) if str(making) in (p.info["cmdline"] or [])]
    for process in found:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(found, timeout=10)


def _create_databases(state: StackState) -> None:
    import psycopg

    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(state.postgres_url("postgres"), autocommit=True) as conn:
                existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
                for name in DATABASES:
                    if name not in existing:
                        conn.execute(f'CREATE DATABASE "{name}"')
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _load(folder: Path) -> StackState | None:
    try:
        return StackState(**json.loads((folder / STATE).read_text()))
    except FileNotFoundError:
        return None


def _save(folder: Path, state: StackState) -> None:
    _write_private(folder / STATE, json.dumps(asdict(state), indent=1))


def _write_private(path: Path, text: str) -> None:
    """Readable by its owner only from the first byte: it holds the password."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
        file.write(text)
