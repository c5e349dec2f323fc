"""Nothing the project runs reaches for the network: no library phones home (MLflow's telemetry fetches its
config and posts usage from every process, unless told not to; Prefect's is off already), checked with
Python's audit hooks in every process of real runs of each entry script (the tuning run's writer and
publisher, the service, a local Prefect server's processes included), outside any CI marker. Loopback is
the one network they may use: the service's clients, the Prefect API the flows report to."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.helpers import PROJECT_DIR, free_port, wait_for

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
    if ((event == "socket.getaddrinfo" and not _loopback(args[0])) or (event == "socket.connect"
            and args[0].family in (socket.AF_INET, socket.AF_INET6) and not _loopback(args[1][0]))):
        with open(os.environ["NETWORK_LOG"], "a") as log:
            log.write(f"{os.getpid()} {sys.argv[:3]} {event} {args!r}\\n")
sys.addaudithook(_watch)
'''


def offline(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment in which every Python process logs each name lookup and connection beyond loopback to
    the file given with it, and one in which MLflow's telemetry would be on (else the test proves nothing)."""
    (hooks := tmp_path / "hooks").mkdir()
    (hooks / "sitecustomize.py").write_text(_WATCH)  # imported by every Python process started with this path
    network_log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k not in _CI_MARKERS and not k.startswith(("MLFLOW_", "PREFECT_"))}
    env |= {"PYTHONPATH": str(hooks), "NETWORK_LOG": str(network_log), "PREFECT_HOME": str(tmp_path / "prefect")}
    on = subprocess.run([sys.executable, "-c", "from mlflow.telemetry.utils import is_telemetry_disabled as off; "
                         "print(not off())"], env=env, capture_output=True, text=True, check=True)
    assert on.stdout.strip() == "True", on.stdout + on.stderr
    return env, network_log


def run(script: str, *args: str, folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, str(PROJECT_DIR / script), *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_a_tuning_run_on_a_local_store_makes_no_network_call_in_any_of_its_processes(tmp_path: Path) -> None:
    env, network_log = offline(tmp_path)
    (folder := tmp_path / "run").mkdir()
    assert "Champion: models:/" in run("sentiment_mlflow_optuna.py", "--trials", "2", folder=folder, env=env).stdout
    assert not network_log.exists(), network_log.read_text()


def test_serving_monitoring_scoring_and_a_retrain_reach_nothing_beyond_loopback(tmp_path: Path) -> None:
    """The service answering and taking feedback, then the orchestration CLI's one-off commands, each with
    the local Prefect API Prefect starts for it, on the champion of a short tuning run."""
    env, network_log = offline(tmp_path)
    (folder := tmp_path / "run").mkdir()
    run("sentiment_mlflow_optuna.py", "--models", "NaiveBayes", "--trials", "2", folder=folder, env=env)
    port = free_port()
    with (folder / "service.log").open("w") as log:
        service = subprocess.Popen([sys.executable, str(PROJECT_DIR / "serve_api.py"), "--port", str(port)],
                                   cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        def answers() -> bool:
            assert service.poll() is None, (folder / "service.log").read_text()
            try:
                return client.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, 60, "the service to answer")
        predicted = client.post("/predict", json={"reviews": ["great laptop, fast", "stopped working, bad"]})
        assert predicted.status_code == 200, predicted.text
        prediction_id = predicted.json()["predictions"][0]["id"]
        assert client.post("/feedback", json={"prediction_id": prediction_id, "label": "positive"}).status_code == 200
    service.send_signal(signal.SIGINT)
    assert service.wait(timeout=60) == 0, (folder / "service.log").read_text()
    run("ml_orchestration_flipkart.py", "monitor", "--no-retrain", folder=folder, env=env)
    run("ml_orchestration_flipkart.py", "score", "--input", str(PROJECT_DIR / "data" / "sample_reviews.csv"),
        "--output", "predictions.csv", folder=folder, env=env)
    assert (folder / "predictions.csv").stat().st_size > 0
    run("ml_orchestration_flipkart.py", "retrain", folder=folder, env=env)
    assert not network_log.exists(), network_log.read_text()
