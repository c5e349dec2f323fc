"""The compose stack as users run it, on a real container engine: up, tune, serve, feed back, check,
down and up again, a killed api, down -v; and the image itself (non-root, no secrets)."""
from __future__ import annotations

import http.client
import json
import re
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from review_sentiment.data.reviews import load_texts
from tests.containers.engine import Compose, podman
from tests.helpers import SAMPLE, wait_for

# With `-n`, one test process runs this module's tests (`--dist loadscope`): they share one compose project.
pytestmark = [pytest.mark.container, pytest.mark.e2e]
API = "http://127.0.0.1:18000"


def call(path: str, body: object | None = None, key: str | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {key}"} if key else {})
    request = urllib.request.Request(API + path, None if body is None else json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as err:
        return err.code, {"detail": err.read().decode(errors="replace")}
    except (OSError, http.client.HTTPException):  # no answer, or one cut short (IncompleteRead) by a kill
        return 0, {}


@pytest.fixture(scope="module")
def compose(container_images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    env, built = container_images
    folder = tmp_path_factory.mktemp("stack")
    key = secrets.token_hex(16)
    (folder / ".env").write_text(f"POSTGRES_PASSWORD={secrets.token_hex(16)}\nREVIEW_SENTIMENT_API_KEY={key}\n")
    stack = Compose(folder, env | built | {"API_PORT": "18000", "MLFLOW_PORT": "15000", "PREFECT_PORT": "14200"})
    stack.key = key  # the service's API key: feedback with it is trusted
    stack("down", "-v", check=False)  # what a killed session left (its volume holds another password)
    try:
        yield stack
    finally:
        stack("down", "-v", check=False)


def served(compose: Compose) -> None:
    """The stack up with a champion served: tuned on the sample (2 workers) if it has none yet."""
    started = time.monotonic()
    compose("up", "-d")
    wait_for(lambda: all(compose.healthy(s) for s in ("db", "mlflow", "prefect")), 180, "db, mlflow, prefect healthy")
    if call("/health")[0] != 200:
        shutil.copy(SAMPLE, compose.folder / "data" / "reviews.csv")  # the user's CSV, mounted read-only
        tuned = compose("--profile", "tune", "run", "--rm", "tune", "--data", "/data/reviews.csv", "--workers", "2",
                        "--trials", "6", timeout=1200)
        assert "Champion: models:/FlipkartSentimentModel@champion" in tuned.stdout, tuned.stdout[-2000:]
        assert "child runs go through the MLflow server" not in tuned.stderr, tuned.stderr  # into its database
    wait_for(lambda: call("/health")[0] == 200, 120, "the api to serve the champion")
    print(f"up → served in {time.monotonic() - started:.0f} s")
    state = podman(compose.env, "inspect", compose.container("scheduler"), "--format", "{{.State.Status}}").stdout
    assert state.strip() == "running", state  # the schedules: no health check of their own, but up


def test_the_stack_tunes_serves_checks_and_keeps_its_data_across_down_and_up(compose: Compose) -> None:
    served(compose)
    champion = call("/model")[1]["champion"]
    assert champion["version"] and champion["probability_meaning"].startswith("calibrated")

    texts = load_texts(SAMPLE, "Review text").dropna().tolist()[:200]
    status, answer = call("/predict", {"reviews": texts})
    assert status == 200 and len(answer["predictions"]) == 200
    first = answer["predictions"][0]["id"]
    assert call("/feedback", {"prediction_id": first, "label": "positive"})[0] == 401  # no key: refused
    fed = [call("/feedback", {"prediction_id": p["id"], "label": p["label"]}, compose.key)[0]
           for p in answer["predictions"][:60]]
    assert fed == [200] * 60
    checked = compose("exec", "scheduler", "python", "ml_orchestration_flipkart.py", "monitor")
    assert "Check " in checked.stdout and "MLflow run" in checked.stdout, checked.stdout[-2000:] + checked.stderr
    # A retrain in the scheduler's container follows the champion's lineage: the CSV `tune` read, at /data.
    retrained = compose("exec", "scheduler", "python", "ml_orchestration_flipkart.py", "retrain", check=False)
    assert retrained.returncode == 0, retrained.stdout[-2000:] + retrained.stderr[-2000:]

    compose("down")
    compose("up", "-d")
    wait_for(lambda: call("/health")[0] == 200, 180, "the api after down and up")
    assert call("/model")[1]["champion"]["version"] == champion["version"]
    counted = podman(compose.env, "exec", compose.container("db"), "sh", "-c",
                     "PGPASSWORD=$POSTGRES_PASSWORD psql -h 127.0.0.1 -U review -d predictions -tAc "
                     "'select (select count(*) from predictions), (select count(*) from feedback)'").stdout
    assert counted.strip() == "200|60", counted


def test_a_killed_api_process_is_restarted_and_every_answer_is_in_the_log(compose: Compose) -> None:
    """kill -9 of the api container's process under 4 clients: restarted, and no prediction answered 200
    is missing from the log (on the stack's PostgreSQL)."""
    served(compose)
    answered: list[str] = []
    refused: list[int] = []  # statuses other than 200 (0: no answer)
    stop = threading.Event()
    pid = podman(compose.env, "inspect", compose.container("api"), "--format", "{{.State.Pid}}").stdout.strip()

    def client() -> None:
        while not stop.is_set():
            status, answer = call("/predict", {"reviews": ["Superb laptop", "Stopped working"]})
            if status == 200:
                answered.extend(p["id"] for p in answer["predictions"])
            else:
                refused.append(status)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    # However fast the machine (other tests may share it): the clients run until they meet the killed api.
    wait_for(lambda: len(answered) >= 5000, 120, "5,000 answered predictions before the kill")
    refused.clear()
    subprocess.run(["kill", "-9", pid], check=True)
    wait_for(lambda: refused, 30, "a client to meet the killed api")
    stop.set()
    for thread in threads:
        thread.join()
    wait_for(lambda: call("/health")[0] == 200, 120, "the api restarted")
    restarted = podman(compose.env, "inspect", compose.container("api"), "--format", "{{.RestartCount}}").stdout
    logged = set(podman(compose.env, "exec", compose.container("db"), "sh", "-c",
                        "PGPASSWORD=$POSTGRES_PASSWORD psql -h 127.0.0.1 -U review -d predictions -tAc "
                        "'select id from predictions'").stdout.split())
    missing = set(answered) - logged
    print(f"answered {len(answered)}, missing from the log {len(missing)}, restarts {restarted.strip()}")
    assert int(restarted) >= 1 and len(answered) > 0 and not missing


def test_a_tune_stopped_mid_study_ends_on_sigterm_without_waiting_out_the_timeout(compose: Compose) -> None:
    """`stop` sends SIGTERM. As PID 1, python dropped it (no handler): the run went on, to its end or to
    `stop`'s timeout and a kill (without the init: exit 0 after all 400 trials). Under the tune role's
    init it ends at once (143)."""
    served(compose)
    name = "rs-test-tune-stopped"
    compose("--profile", "tune", "run", "-d", "--name", name, "tune", "--data", "/data/reviews.csv",
            "--trials", "400")
    try:
        wait_for(lambda: re.search(r"trial +\d+ ", podman(compose.env, "logs", name, check=False).stdout),
                 600, "the stopped tune's first trial")
        podman(compose.env, "stop", "-t", "120", name)
        state = podman(compose.env, "inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert state == "143", f"exit {state}, not SIGTERM's 143 (137: killed after the timeout; 0: it ran to its end)"
    finally:
        podman(compose.env, "rm", "-f", name, check=False)


def test_down_v_leaves_nothing_of_the_project(compose: Compose) -> None:
    compose("down", "-v")
    volumes = podman(compose.env, "volume", "ls", "--format", "{{.Name}}").stdout.split()
    networks = podman(compose.env, "network", "ls", "--format", "{{.Name}}").stdout.split()
    containers = podman(compose.env, "ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not [n for n in volumes + networks + containers if n.startswith("rs-test")], (containers, volumes, networks)


def test_the_image_runs_as_a_user_and_holds_no_secret(container_images) -> None:
    env, built = container_images
    assert podman(env, "run", "--rm", built["APP_IMAGE"], "id", "-u").stdout.strip() != "0"
    history = podman(env, "history", "--no-trunc", "--format", "{{.CreatedBy}}", built["APP_IMAGE"]).stdout.lower()
    assert not any(word in history for word in ("password", "api_key", "secret"))
    refused = podman(env, "run", "--rm", built["APP_IMAGE"], "python", "serve_api.py", "--host", "0.0.0.0",
                     check=False)
    assert refused.returncode != 0 and refused.stderr.strip().splitlines()[-1].startswith(
        "error: --host 0.0.0.0 can be reached from other machines")
    files = podman(env, "run", "--rm", built["APP_IMAGE"], "sh", "-c", "ls -a /app /data").stdout
    assert ".env" not in files and "mlflow.db" not in files and ".git" not in files
