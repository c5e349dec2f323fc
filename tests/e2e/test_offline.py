"""Nothing the project runs reaches for the network: no library phones home (MLflow's telemetry fetches its
config and posts usage from every process, unless told not to; Prefect's is off already), checked with
Python's audit hooks in every process of real runs of each entry script (the tuning run's writer and
publisher, the service, a local Prefect server's processes included), outside any CI marker. Loopback is
the one network they may use: the service's clients, the Prefect API the flows report to."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.served import running_server
from tests.helpers import PROJECT_DIR, wait_for

# MLflow switches its telemetry off by itself where one of these is set (a CI, pytest): a user has none
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS",
               "TF_BUILD", "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION",
               "CLOUD_RUN_EXECUTION", "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID")

_WATCH = '''import ipaddress, os, socket, sys
def _loopback(host):
    host = host.decode() if isinstance(host, bytes) else host
    try:
        return host is None or host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
def _watch(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        outside = not _loopback(args[0])
    elif event == "socket.getnameinfo":
        outside = not _loopback(args[0][0])
    elif event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        outside = (args[0].family in (socket.AF_INET, socket.AF_INET6) and args[1] is not None
                   and not _loopback(args[1][0]))
    else:
        return
    if outside:
        with open(os.environ["NETWORK_LOG"], "a") as log:
            log.write(f"{os.getpid()} {sys.argv[:3]} {event} {args!r}\\n")
with open("/proc/self/cmdline") as line, open(os.environ["WATCHED_LOG"], "a") as watched:
    watched.write(line.read().replace("\\0", " ") + "\\n")  # sys.argv is not set yet for -m
sys.addaudithook(_watch)
'''


@dataclass(frozen=True)
class Watched:
    """An environment in which every Python process started logs its command line, then each name lookup
    and each connection or datagram beyond loopback, by Python's audit hooks (a forked process keeps them)."""

    env: dict[str, str]
    network_log: Path
    started_log: Path

    @classmethod
    def make(cls, tmp_path: Path) -> Watched:
        (hooks := tmp_path / "hooks").mkdir()
        (hooks / "sitecustomize.py").write_text(_WATCH)  # imported by every Python process started with this path
        watched = cls({k: v for k, v in os.environ.items()
                       if k not in _CI_MARKERS and not k.startswith(("MLFLOW_", "PREFECT_"))},
                      tmp_path / "network.log", tmp_path / "started.log")
        watched.env.update(PYTHONPATH=str(hooks), NETWORK_LOG=str(watched.network_log),
                           WATCHED_LOG=str(watched.started_log), PREFECT_HOME=str(tmp_path / "prefect"))
        # the environment really is one where MLflow's telemetry would be on (else the test proves nothing)
        on = subprocess.run([sys.executable, "-c", "from mlflow.telemetry.utils import is_telemetry_disabled as "
                             "off; print(not off())"], env=watched.env, capture_output=True, text=True, check=True)
        assert on.stdout.strip() == "True", on.stdout + on.stderr
        return watched

    def run(self, script: str, *args: str, folder: Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, str(PROJECT_DIR / script), *args], cwd=folder, env=self.env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done

    def reached_out(self) -> str:
        return self.network_log.read_text() if self.network_log.exists() else ""

    def started(self) -> str:
        return self.started_log.read_text()


def test_a_tuning_run_on_a_local_store_makes_no_network_call_in_any_of_its_processes(tmp_path: Path) -> None:
    watched = Watched.make(tmp_path)
    (folder := tmp_path / "run").mkdir()
    assert "Champion: models:/" in watched.run("sentiment_mlflow_optuna.py", "--trials", "2", folder=folder).stdout
    assert watched.reached_out() == ""
    started = watched.started()  # the publisher is forked from the command: its hooks are the command's
    assert "sentiment_mlflow_optuna.py" in started and "-m review_sentiment.tracking.trial_writer" in started, started


def test_serving_monitoring_scoring_and_a_retrain_reach_nothing_beyond_loopback(tmp_path: Path) -> None:
    """The service answering and taking feedback, then the orchestration CLI's one-off commands, each with
    the local Prefect API Prefect starts for it, on the champion of a short tuning run."""
    watched = Watched.make(tmp_path)
    (folder := tmp_path / "run").mkdir()
    watched.run("sentiment_mlflow_optuna.py", "--models", "NaiveBayes", "--trials", "2", folder=folder)
    with running_server(None, folder, env=watched.env) as client:
        wait_for(lambda: client.get("/health").status_code == 200, 60, "a loaded model")
        predicted = client.post("/predict", json={"reviews": ["great laptop, fast", "stopped working, bad"]})
        assert predicted.status_code == 200, predicted.text
        prediction_id = predicted.json()["predictions"][0]["id"]
        assert client.post("/feedback", json={"prediction_id": prediction_id, "label": "positive"}).status_code == 200
    watched.run("ml_orchestration_flipkart.py", "monitor", "--no-retrain", folder=folder)
    watched.run("ml_orchestration_flipkart.py", "score", "--input", str(PROJECT_DIR / "data" / "sample_reviews.csv"),
                "--output", "predictions.csv", folder=folder)
    assert (folder / "predictions.csv").stat().st_size > 0
    watched.run("ml_orchestration_flipkart.py", "retrain", folder=folder)
    assert watched.reached_out() == ""
    started = watched.started()  # each with the local Prefect server Prefect starts for it (uvicorn)
    assert "serve_api.py --port" in started and started.count("-m uvicorn") == 3, started
    for command in ("monitor", "score", "retrain"):
        assert f"ml_orchestration_flipkart.py {command}" in started, started
