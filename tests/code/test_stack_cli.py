"""`stack.py up` as a user meets it when a port is taken: one line that names the port and the flag
that moves it, before anything starts or is saved."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from review_sentiment.orchestration.stack import DEFAULT_PORTS
from tests.helpers import PROJECT_DIR, free_port


@pytest.mark.e2e  # stack.py as a user starts it, in a process of its own
def test_a_busy_port_is_named_with_its_flag_and_nothing_is_saved(tmp_path: Path) -> None:
    with socket.socket() as holder:  # a real program listening where the MLflow server would
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        done = subprocess.run([sys.executable, str(PROJECT_DIR / "stack.py"), "up", "--dir", "st",
                               "--postgres-port", str(free_port()), "--mlflow-port", str(busy),
                               "--prefect-port", str(free_port())], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2 and done.stderr == (
        f"error: port {busy} on 127.0.0.1 is in use by another program, so the MLflow server cannot listen there: "
        "choose another with --mlflow-port\n"), done.stderr
    assert list(tmp_path.iterdir()) == []  # no folder, so no saved ports to override the next `up`'s flags


def test_the_stacks_mlflow_server_keeps_off_the_port_of_mlflows_own_server() -> None:
    from mlflow.cli import cli  # here, not at the top: importing MLflow's CLI takes ~1.5 s
    [mlflows_own] = [option.default for option in cli.commands["server"].params if option.name == "port"]
    assert DEFAULT_PORTS["mlflow_port"] != mlflows_own  # where `mlflow ui` (the README's) listens


def test_the_image_sets_every_quiet_setting_the_entry_scripts_and_the_stack_set() -> None:
    """The Dockerfile cannot import `constants`, so it repeats MLflow's and Prefect's no-telemetry settings:
    each must be there with the same value (a setting added to one place alone would phone home)."""
    from review_sentiment.constants import QUIET_MLFLOW_ENV
    from review_sentiment.orchestration.local_prefect import quiet_prefect_env

    dockerfile = (PROJECT_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    settings = dict(item.split("=", 1) for line in dockerfile.splitlines() if line.startswith("ENV ")
                    for item in line.split()[1:])
    quiet = QUIET_MLFLOW_ENV | {k: v for k, v in quiet_prefect_env({}).items() if k != "PREFECT_HOME"}
    assert {k: settings.get(k) for k in quiet} == quiet
