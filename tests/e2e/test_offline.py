"""Nothing the project runs reaches for the network: no library phones home (MLflow's telemetry fetches its
config and posts usage from every process, unless told not to; Prefect's is off already), checked with
Python's audit hooks in every process of a real tuning run, the writer and the publisher included."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import PROJECT_DIR

# MLflow switches its telemetry off by itself where one of these is set (a CI, pytest): a user has none
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
               "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
               "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID")

_WATCH = '''import os, socket, sys
def _watch(event, args):
    if event == "socket.getaddrinfo" or (event == "socket.connect" and args[0].family != socket.AF_UNIX):
        with open(os.environ["NETWORK_LOG"], "a") as log:
            log.write(f"{os.getpid()} {sys.argv[:3]} {event} {args!r}\\n")
sys.addaudithook(_watch)
'''


def test_a_tuning_run_on_a_local_store_makes_no_network_call_in_any_of_its_processes(tmp_path: Path) -> None:
    (hooks := tmp_path / "hooks").mkdir()
    (hooks / "sitecustomize.py").write_text(_WATCH)  # imported by every Python process started with this path
    network_log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k not in _CI_MARKERS and not k.startswith("MLFLOW_")} | {
        "PYTHONPATH": str(hooks), "NETWORK_LOG": str(network_log)}
    # the environment really is one where MLflow's telemetry would be on (else this test proves nothing)
    on = subprocess.run([sys.executable, "-c", "from mlflow.telemetry.utils import is_telemetry_disabled as off; "
                         "print(not off())"], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "True", on.stdout + on.stderr
    (folder := tmp_path / "run").mkdir()
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "sentiment_mlflow_optuna.py"), "--trials", "2"],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Champion: models:/" in done.stdout
    assert not network_log.exists(), network_log.read_text()
