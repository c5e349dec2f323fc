"""The shared stack as users run it: `python stack.py` up, use, down and up again; two service replicas
writing one PostgreSQL prediction log; the scheduled retrain run by a `prefect worker` from a work pool."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import mlflow
import psutil
import psycopg
import pytest
from mlflow.entities import Metric

from review_sentiment.constants import RETRAIN_EXPERIMENT, RETRAIN_FLOW, TRACKING_DB_ENV
from review_sentiment.databases import sqlalchemy_url
from review_sentiment.orchestration.commands import DEPLOYMENT, POOL_SUFFIX
from review_sentiment.orchestration.stack import STATE, StackState
from review_sentiment.processes import ended
from review_sentiment.tracking.trial_runs import METRIC, ChildRunStore, child_run
from tests.code.test_trial_runs import every_kind_of_trial, same_rows_either_way
from tests.e2e.conftest import new_database, stack_env
from tests.e2e.served import Load, Service
from tests.helpers import PROJECT_DIR, SAMPLE, Store, free_port, wait_for


def stack_command(folder: Path, *args: str) -> str:
    """`python stack.py ARGS --dir NAME`, run beside the folder (a relative --dir, like the default)."""
    done = subprocess.run([sys.executable, str(PROJECT_DIR / "stack.py"), *args, "--dir", folder.name],
                          cwd=folder.parent, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stack_folder(prefix: str) -> tuple[Path, dict[str, int], list[str]]:
    """A fresh folder for `stack.py` (open to the postgres user), free ports, and the flags that give them."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    ports = {"--postgres-port": free_port(), "--mlflow-port": free_port(), "--prefect-port": free_port()}
    return folder, ports, [str(x) for pair in ports.items() for x in pair]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_stack_up_use_down_up_keeps_the_data_and_leaves_nothing_running() -> None:
    folder, ports, flags = stack_folder("stack-cli-")
    try:
        printed = stack_command(folder, "up", *flags)
        exports = dict(line.removeprefix("export ").split("=", 1) for line in printed.splitlines()
                       if line.startswith("export "))
        assert exports["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{ports['--mlflow-port']}"
        assert exports["PREFECT_API_URL"] == f"http://127.0.0.1:{ports['--prefect-port']}/api"
        assert exports["OPTUNA_STORAGE"].startswith("postgresql://")
        client = mlflow.MlflowClient(exports["MLFLOW_TRACKING_URI"])
        run = client.create_run(client.create_experiment("lifecycle"))
        client.log_param(run.info.run_id, "kept", "yes")
        assert httpx.get(f"{exports['PREFECT_API_URL']}/health", timeout=10).json() is True
        state = json.loads((folder / STATE).read_text())
        servers = [psutil.Process(int(state[name][0])) for name in ("mlflow", "prefect")]
        members = [member for server in servers for member in [server, *server.children(recursive=True)]]
        postmaster = int((folder / "postgres" / "postmaster.pid").read_text().split()[0])

        assert stack_command(folder, "down").startswith("Stopped: mlflow, prefect, postgres.")
        assert all(ended(process) for process in members)
        assert not psutil.pid_exists(postmaster) or psutil.Process(postmaster).status() == psutil.STATUS_ZOMBIE
        assert not any(listening(port) for port in ports.values())
        assert [line.split()[1] for line in stack_command(folder, "status").splitlines()] == ["stopped"] * 3

        moved = free_port()  # the password and data are the folder's; a port given again moves its server
        printed = stack_command(folder, "up", "--mlflow-port", str(moved))
        assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{moved}" in printed.splitlines()
        ports["--mlflow-port"] = moved
        client = mlflow.MlflowClient(f"http://127.0.0.1:{moved}")
        assert client.get_run(run.info.run_id).data.params == {"kept": "yes"}
        assert f"http://127.0.0.1:{ports['--prefect-port']}/api" in stack_command(folder, "status")  # kept
        assert [line.split()[1] for line in stack_command(folder, "status").splitlines()] == ["running"] * 3
    finally:
        stack_command(folder, "down")
    assert not any(listening(port) for port in ports.values())


@pytest.mark.parametrize("stopped_by", ["ctrl-c", "kill -9"])
def test_a_first_up_stopped_while_postgresql_makes_its_cluster_leaves_a_folder_the_next_up_starts_from(
        stopped_by: str) -> None:
    """Ctrl-C (to the terminal's whole group) or kill -9 while initdb runs: the next `up` starts the stack
    anyway, and `down` leaves nothing running. Before, the cluster's folder was made where it stays, so
    the next `up` met it empty (a traceback on every `up` after) or half-made (a fault probe: 4 of 6)."""
    folder, ports, flags = stack_folder("stack-cut-")
    first = psutil.Popen([sys.executable, str(PROJECT_DIR / "stack.py"), "up", "--dir", folder.name, *flags],
                         cwd=folder.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)  # a group of its own, as a terminal gives a command

    def initdb_runs() -> bool:
        return any(child.name() == "initdb" for child in first.children(recursive=True))

    try:
        wait_for(initdb_runs, 60, "initdb to run", 0.01)
        if stopped_by == "ctrl-c":
            os.killpg(first.pid, signal.SIGINT)
        else:
            first.kill()
        _, said = first.communicate(timeout=60)
        if stopped_by == "ctrl-c":
            assert first.returncode == 130 and said.splitlines() == ["interrupted (Ctrl-C)"], said
        stack_command(folder, "up", *flags)
        assert [line.split()[1] for line in stack_command(folder, "status").splitlines()] == ["running"] * 3
    finally:
        stack_command(folder, "down")
    assert not any(listening(port) for port in ports.values())
    assert not list(folder.glob("postgres.making-*"))


def test_down_stops_the_mlflow_servers_worker_left_running_once_its_leader_was_killed() -> None:
    """kill -9 of the MLflow server's own process leaves its uvicorn worker holding the port (a fault
    probe: `down` then said nothing of it, and the next `up` failed, the port in use)."""
    folder, ports, flags = stack_folder("stack-leader-")
    try:
        stack_command(folder, "up", *flags)
        leader = psutil.Process(int(json.loads((folder / STATE).read_text())["mlflow"][0]))
        workers = leader.children(recursive=True)
        assert workers  # uvicorn, in the leader's process group
        leader.kill()
        wait_for(lambda: ended(leader), 30, "the MLflow server's leader to end")
        assert not any(ended(worker) for worker in workers) and listening(ports["--mlflow-port"])
        assert stack_command(folder, "down").startswith("Stopped: mlflow, prefect, postgres.")
        assert all(ended(worker) for worker in workers)
    finally:
        stack_command(folder, "down")
    assert not any(listening(port) for port in ports.values())


def test_two_replicas_share_one_postgres_log_and_every_answer_is_there_once(
        own_store: Store, stack: StackState, tmp_path: Path) -> None:
    log = new_database(stack, "predictions")
    replicas = [Service.start(own_store.uri, tmp_path, "--prediction-log", log) for _ in range(2)]
    texts = [f"review {i}: {'great value' if i % 2 else 'stopped working'}" for i in range(500)]
    texts[7] = "NUL \x00 inside"  # PostgreSQL's text cannot hold it: logged with U+FFFD in its place
    loads = [Load(service.port, texts, clients=4).start() for service in replicas]
    wait_for(lambda: all(len(load.answered) >= 300 for load in loads), 60, "answers from both replicas")
    for load in loads:
        load.stop()
    assert all(service.stop(signal.SIGTERM) in (0, -signal.SIGTERM) for service in replicas)

    answered = [pid for load in loads for pid in load.answered]
    with psycopg.connect(log) as conn:
        rows = conn.execute("SELECT id, count(*) FROM predictions GROUP BY id").fetchall()
    counts = dict(rows)
    assert set(answered) <= counts.keys() and set(counts.values()) == {1}  # every answer there, once
    assert len(counts) == len(answered)  # and nothing that was not answered
    assert len(set(answered)) == len(answered) and len(answered) >= 600

    report = subprocess.run([sys.executable, str(PROJECT_DIR / "serve_api.py"), "report", "--prediction-log", log],
                            capture_output=True, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": own_store.uri})
    assert report.returncode == 0, report.stderr
    champion_row = next(line for line in report.stdout.splitlines() if line.startswith("champion "))
    assert str(len(answered)) in champion_row.split(), report.stdout
    assert stack.password not in report.stdout + report.stderr


def test_a_prefect_worker_on_a_work_pool_runs_the_scheduled_retrain(stack: StackState, tmp_path: Path) -> None:
    env = stack_env(stack, PREFECT_HOME=str(tmp_path / "client"), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    deployed = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "ml_orchestration_flipkart.py"), "--work-pool", "tests-pool",
         "--cron", "0 3 * * *", "--monitor-cron", "0 3 * * *", "--data", str(SAMPLE)], cwd=tmp_path, env=env,
        capture_output=True, text=True,
        timeout=120)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    name = DEPLOYMENT + POOL_SUFFIX
    assert f"/{name} to work pool 'tests-pool', cron '0 3 * * *'" in deployed.stdout
    api = httpx.Client(base_url=stack.environment()["PREFECT_API_URL"], timeout=30)

    def runs() -> list[dict]:
        return api.post("/flow_runs/filter", json={"deployments": {"name": {"any_": [name]}}}).json()

    wait_for(lambda: any(run["auto_scheduled"] for run in runs()), 60, "the cron's scheduled runs")
    # The cron's next run is hours away: schedule one of the deployment's runs 2 s from now, as the
    # scheduler does (state SCHEDULED, a start time), for the worker to pick up when it is due.
    deployment = api.get(f"/deployments/name/{RETRAIN_FLOW}/{name}").json()
    assert deployment["job_variables"]["env"]["MLFLOW_DISABLE_TELEMETRY"] == "true"  # whatever the worker's env
    due = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    scheduled = api.post(f"/deployments/{deployment['id']}/create_flow_run", json={
        "state": {"type": "SCHEDULED", "state_details": {"scheduled_time": due}}}).json()
    assert scheduled["state_type"] == "SCHEDULED" and scheduled["work_pool_name"] == "tests-pool"
    worker_dir = tmp_path / "worker"  # another folder, as on another machine: only the environment is shared
    worker_dir.mkdir()
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "tests-pool", "--type", "process"],
            cwd=worker_dir, env=env | {"PREFECT_WORKER_QUERY_SECONDS": "1"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def state() -> str:
        return api.get(f"/flow_runs/{scheduled['id']}").json()["state_type"]

    try:
        wait_for(lambda: state() in ("COMPLETED", "FAILED", "CRASHED"), 150, "the worker to run the scheduled retrain")
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    assert state() == "COMPLETED", (tmp_path / "worker.log").read_text()[-3000:]
    tracking = mlflow.MlflowClient(stack.environment()["MLFLOW_TRACKING_URI"])
    retrains = tracking.search_runs([tracking.get_experiment_by_name(RETRAIN_EXPERIMENT).experiment_id])
    assert "FINISHED" in {run.info.status for run in retrains}


def test_pinned_a_child_run_inserted_into_postgresql_is_the_rows_mlflows_own_calls_write(stack: StackState) -> None:
    """As on SQLite (tests/code/test_trial_runs.py), on a PostgreSQL tracking store: its column types are strict."""
    same_rows_either_way(sqlalchemy_url(new_database(stack, "mlflow_rows")))


def test_child_runs_go_straight_into_the_servers_own_database_and_never_into_another(
        stack: StackState, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """With REVIEW_SENTIMENT_TRACKING_DB naming the server's database (`stack.py env`), a writer's child runs
    are inserted there, not sent through the server (its access log has no `runs/create` for them); a database
    that is not the server's (another MLflow database, one at an older MLflow's schema, one without MLflow's
    tables, one not there) is never written to, nor migrated: the child runs go through the server, and the
    writer says so in one line, once."""
    server_log = access_log(stack)
    client = mlflow.MlflowClient(stack.environment()["MLFLOW_TRACKING_URI"])
    other_mlflow, older = new_database(stack, "other_mlflow"), new_database(stack, "older_mlflow")
    for url in (other_mlflow, older):
        mlflow.MlflowClient(sqlalchemy_url(url)).search_experiments()  # MLflow's tables, made
    with psycopg.connect(older, autocommit=True) as conn:  # as an older MLflow left it: a table fewer, a revision
        conn.execute("DROP TABLE latest_metrics")  # before (MLflow's store would make the one, migrate from the other)
        conn.execute("UPDATE alembic_version SET version_num = '89d3d66ed43f'")
    no_tables = new_database(stack, "no_tables")
    before = {url: schema_of(url) for url in (other_mlflow, older, no_tables)}
    for database, said in ((stack.environment()[TRACKING_DB_ENV], None), (other_mlflow, "does not hold run"),
                           (older, "is not at the installed MLflow's schema"), (no_tables, "has no MLflow tables"),
                           (f"postgresql://nobody:secret@127.0.0.1:{free_port()}/mlflow", "cannot be used")):
        monkeypatch.setenv(TRACKING_DB_ENV, database)
        experiment = client.create_experiment(f"straight_{uuid.uuid4().hex[:8]}")
        parent = client.create_run(experiment).info.run_id
        runs = [child_run(experiment, parent, trial, "MAXIMIZE") for trial in every_kind_of_trial()]
        created = server_log.read_text().count("/runs/create")
        store = ChildRunStore(client.tracking_uri)
        store.write(runs[:2])
        store.write(runs[2:])
        assert numbers_written(client, server_log, experiment, parent) == ["0", "1", "2", "3", "4"], database
        assert server_log.read_text().count("/runs/create") - created == (0 if said is None else 5), database
        lines = [line for line in capfd.readouterr().err.splitlines() if TRACKING_DB_ENV in line]
        assert len(lines) == (0 if said is None else 1) and (said is None or said in lines[0]), lines
        assert "secret" not in "".join(lines)
    assert {url: schema_of(url) for url in before} == before
    with psycopg.connect(other_mlflow) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_from_a_failed_write_into_the_servers_database_on_child_runs_go_through_the_server(
        stack: StackState, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """A batch the database refuses is written nowhere (one transaction; the run fills such gaps once its
    trials are done: a batch that failed as it committed may be in), and every later child run goes through
    the server, with one line said."""
    monkeypatch.setenv(TRACKING_DB_ENV, stack.environment()[TRACKING_DB_ENV])
    server_log = access_log(stack)
    client = mlflow.MlflowClient(stack.environment()["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment(f"failed_{uuid.uuid4().hex[:8]}")
    parent = client.create_run(experiment).info.run_id
    runs = [child_run(experiment, parent, trial, "MAXIMIZE") for trial in every_kind_of_trial()]
    refused = dataclasses.replace(runs[1], metrics=[Metric(METRIC, "not a number", 0, 0)])  # type: ignore[arg-type]
    created = server_log.read_text().count("/runs/create")
    store = ChildRunStore(client.tracking_uri)
    store.write([runs[0], refused])
    store.write(runs[2:4])
    store.write(runs[4:])
    assert numbers_written(client, server_log, experiment, parent) == ["2", "3", "4"]
    assert server_log.read_text().count("/runs/create") - created == 3
    [line] = [line for line in capfd.readouterr().err.splitlines() if TRACKING_DB_ENV in line]
    assert "from now on" in line and "not a number" in line, line


def access_log(stack: StackState) -> Path:
    """The MLflow server's output: its access log."""
    return Path(os.readlink(f"/proc/{stack.mlflow[0]}/fd/1"))


def numbers_written(client: mlflow.MlflowClient, server_log: Path, experiment: str, parent: str) -> list[str]:
    """The child runs' numbers, once the server has logged the search that found them (its access log is then
    complete up to it)."""
    searched = server_log.read_text().count("/runs/search")
    written = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    wait_for(lambda: server_log.read_text().count("/runs/search") > searched, 10, "the search in the server's log")
    return sorted(r.data.tags["number"] for r in written)


def schema_of(url: str) -> tuple[set[str], list[tuple[str, ...]]]:
    """A database's tables and its alembic revision (none where it has no such table)."""
    with psycopg.connect(url) as conn:
        tables = {name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchall() if "alembic_version" in tables \
            else []
    return tables, revision
