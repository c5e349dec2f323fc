"""Our image against MLflow's own serving image for the same registered model, both built here on
the same Debian base with podman (docs/scaling-out.md, "Containers"): image size, build times, cold start to
the first 200, req/s and p99 for single reviews and for batches of 100.

    python benchmarks/bench_containers.py             # about 12 min on 2 cores, most of it cold builds
    python benchmarks/bench_containers.py --no-cold   # skip the two builds without cache

MLflow's image is what `mlflow models generate-dockerfile` writes for the champion, with its first
line changed only as far as the shared base needs: `FROM` the base, and a venv on PATH because Debian's
python3 has no pip. Its server is MLflow's (nginx in front of uvicorn, one worker per CPU it sees);
ours is `serve_api.py` with its durable prediction log (SQLite, on a volume) — an answer is sent only
once it is on record. Both containers get the same single CPU (the clients use the others) and the
same memory of the page cache: each is started three times, the median cold start is shown, and
driven in each of the three rounds (interleaved, so that drift on the machine hits both alike). Ours is
timed twice: reading the model from the MLflow store's SQLite file, as MLflow's reads its copy, and from
an MLflow server already running (as in compose.yaml's stack; opening MLflow's SQLite store costs ~0.8 s).
Each side runs its server's defaults: MLflow's starts one uvicorn worker per CPU it sees (2 here, on the
one CPU it gets), ours one process.

Build times: cold (no cache), warm (nothing changed), and after the change each side makes routinely —
for us a code change (the model comes from the registry at run time, so a new model needs no build),
for MLflow a new model version (the model is copied into the image, its requirements reinstalled).
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from bench_serving import CPUS, Server, drive, free_port, train_champion  # noqa: E402

from review_sentiment.constants import SAMPLE_DATA  # noqa: E402
from tests.containers.engine import base_image, build, environment, podman  # noqa: E402

MODEL = "FlipkartSentimentModel"
CONTEXT = ("Dockerfile", ".dockerignore", "requirements.txt", "text_cleaning.py", "sentiment_mlflow_optuna.py",
           "ml_orchestration_flipkart.py", "serve_api.py", "stack.py", "data/nltk_data", "data/sample_reviews.csv",
           "review_sentiment")
THEIRS = "MLflow's"
FROM_SERVER = "ours, MLflow server"  # as in compose.yaml: the model from the stack's MLflow server
NETWORK, TRACKING = "bench-containers", "bench-tracking"
ROUNDS = 3
GOALS = {"image size": 0.5, "cold start": 0.5, "1 review": 3.0, "100 reviews": 2.0}  # ours / MLflow's


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-cold", action="store_true", help="skip the builds without cache")
    parser.add_argument("--single", type=int, default=1500, help="single-review requests per server")
    parser.add_argument("--batches", type=int, default=300, help="100-review requests per server")
    args = parser.parse_args()
    if len(CPUS) > 1:
        os.sched_setaffinity(0, CPUS[:-1])  # the clients (and the builds) off the servers' CPU
    texts = pd.read_csv(SAMPLE_DATA)["Review text"].dropna().astype(str).tolist()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as folder:
        tmp = Path(folder)
        env = environment(tmp)
        base = base_image(env, tmp)
        store = tmp / "store"
        store.mkdir()
        host_env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db")
        train_champion(host_env, str(store))
        champion, other = versions(host_env["MLFLOW_TRACKING_URI"])
        # The image's user reads the store, and SQLite writes beside it; nothing becomes writable by others
        # (NLTK refuses stopwords others could have rewritten).
        subprocess.run(["chmod", "-R", "a+rX", str(store)], check=True)
        for path in (store, store / "mlflow.db"):
            path.chmod(path.stat().st_mode | 0o666)

        ours_context, theirs_context = our_context(tmp), tmp / "mlflow-image"
        generate(host_env, champion, theirs_context, base)
        builds: dict[str, dict[str, float]] = {"ours": {}, THEIRS: {}}
        for side, context, tag in (("ours", ours_context, "localhost/bench-ours"),
                                   (THEIRS, theirs_context, "localhost/bench-mlflow")):
            print(f"Building {side} image…", flush=True)
            if not args.no_cold:
                builds[side]["cold"] = build(env, tag, context, base, extra=("--no-cache",))
            builds[side]["warm"] = build(env, tag, context, base)
            print("  " + ", ".join(f"{kind} {seconds:.1f} s" for kind, seconds in builds[side].items()), flush=True)
        with (ours_context / "review_sentiment" / "__init__.py").open("a") as changed:
            changed.write("# a code change\n")
        builds["ours"]["after a change"] = build(env, "localhost/bench-ours", ours_context, base)
        print(f"  ours after a code change: {builds['ours']['after a change']:.1f} s", flush=True)
        generate(host_env, other, theirs_context, base)
        builds[THEIRS]["after a change"] = build(env, "localhost/bench-mlflow", theirs_context, base)
        # Back to the same champion for both before they are compared.
        generate(host_env, champion, theirs_context, base)
        build(env, "localhost/bench-mlflow", theirs_context, base)

        sizes = {side: image_size(env, tag) for side, tag in (("ours", "localhost/bench-ours"),
                                                              (THEIRS, "localhost/bench-mlflow"))}
        starts: dict[str, list[float]] = {"ours": [], THEIRS: [], FROM_SERVER: []}
        timings: dict[tuple[str, str], tuple[list[float], float]] = {}
        rounds: dict[tuple[str, str], list[float]] = {}  # req/s of each round
        try:
            drive_rounds(env, store, texts, args, tracking_server(env, store), starts, timings, rounds)
        finally:
            podman(env, "rm", "-f", TRACKING, check=False)
            podman(env, "network", "rm", NETWORK, check=False)
    print_table(builds, sizes, starts, timings, rounds)
    return 0


def drive_rounds(env: dict[str, str], store: Path, texts: list[str], args: argparse.Namespace, tracking: str,
                 starts: dict[str, list[float]], timings: dict[tuple[str, str], tuple[list[float], float]],
                 rounds: dict[tuple[str, str], list[float]]) -> None:
    """Each side started (and timed to its first 200) once per round, then driven with a share of the load."""
    for attempt in range(ROUNDS):
        for side in ("ours", THEIRS, FROM_SERVER) if attempt % 2 == 0 else (FROM_SERVER, THEIRS, "ours"):
            server, seconds = start(env, side, store, texts, tracking)
            starts[side].append(seconds)
            print(f"{side} server: first 200 {seconds:.2f} s after `podman run`", flush=True)
            try:
                if side != FROM_SERVER:  # a third of the requests in each round, the rounds interleaved
                    for load, size, count in (("1 review", 1, args.single), ("100 reviews", 100, args.batches)):
                        latencies, elapsed = drive(server, texts, size, count // ROUNDS, 1)
                        before = timings.get((load, side), ([], 0.0))
                        timings[load, side] = (before[0] + latencies, before[1] + elapsed)
                        rounds.setdefault((load, side), []).append(len(latencies) / elapsed)
            finally:
                podman(env, "rm", "-f", server.name)


def versions(store: str) -> tuple[str, str]:
    """The champion's version, and another version of the same model (MLflow's "new model")."""
    import mlflow  # here: a second or so of import the rest of the benchmark does not need

    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    return champion, next(v.version for v in client.search_model_versions(f"name='{MODEL}'") if v.version != champion)


def our_context(tmp: Path) -> Path:
    """The files our Dockerfile copies, in a folder of their own (so the benchmark can change one)."""
    context = tmp / "our-image"
    for name in CONTEXT:
        source, target = PROJECT / name, context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    return context


def generate(env: dict, version: str, context: Path, base: str) -> None:
    """MLflow's Dockerfile for one version, on our base: FROM it, and a venv as its `pip` and `python`."""
    shutil.rmtree(context, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "mlflow", "models", "generate-dockerfile", "-m", f"models:/{MODEL}/{version}",
                    "-d", str(context), "--env-manager", "local"], env=env, check=True, capture_output=True)
    dockerfile = context / "Dockerfile"
    lines = dockerfile.read_text().splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith("FROM "))
    # ARG after the venv: were its first step the same as our Dockerfile's (ARG PIP_CERT), buildah's cache
    # could follow our layer from the shared base and then miss every step after it.
    lines[first:first + 1] = [f"FROM {base}", "RUN python3 -m venv /opt/venv", "ENV PATH=/opt/venv/bin:$PATH",
                              "ARG PIP_CERT"]
    dockerfile.write_text("\n".join(lines) + "\n")


def image_size(env: dict[str, str], tag: str) -> float:
    return int(podman(env, "image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e6


def tracking_server(env: dict[str, str], store: Path) -> str:
    """An MLflow server from our image on the store, as compose.yaml runs one; its container's name."""
    name, port = TRACKING, free_port()
    podman(env, "network", "create", NETWORK)
    podman(env, "run", "-d", "--name", name, "--network", NETWORK, "-p", f"127.0.0.1:{port}:5000",
           "-v", f"{store}:{store}", "localhost/bench-ours", "mlflow", "server", "--host", "0.0.0.0", "--port", "5000",
           "--workers", "1", "--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--allowed-hosts", f"{name}:5000")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return name
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the MLflow server did not answer within 120 s:\n{podman(env, 'logs', name).stderr[-2000:]}")


def start(env: dict[str, str], side: str, store: Path, texts: list[str], tracking: str) -> tuple[Server, float]:
    """A container of `side` on the last CPU; seconds from `podman run` to its first 200 on a prediction."""
    port = free_port()
    name = f"bench-{'mlflow' if side == THEIRS else 'ours'}-{port}"
    common = ["run", "-d", "--name", name, f"--cpuset-cpus={CPUS[-1]}"]
    if side != THEIRS:
        server = Server(name, port, "/health", "/predict", "reviews", None)
        logs = store.parent / f"log-{port}"  # a fresh prediction log each start, on a volume
        logs.mkdir()
        logs.chmod(0o777)
        uri = f"sqlite:///{store}/mlflow.db" if side == "ours" else f"http://{tracking}:5000"
        args = [*common, "--network", NETWORK, "-p", f"127.0.0.1:{port}:8000", "-v", f"{store}:{store}",
                "-v", f"{logs}:/data", "-e", f"MLFLOW_TRACKING_URI={uri}", "-e", "REVIEW_SENTIMENT_API_KEY=bench",
                "localhost/bench-ours"]
    else:
        server = Server(name, port, "/ping", "/invocations", "inputs", None)
        args = [*common, "-p", f"127.0.0.1:{port}:8080", "localhost/bench-mlflow"]
    body = server.body(texts[:1])
    started = time.monotonic()
    podman(env, *args)
    while time.monotonic() - started < 180:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("POST", server.predict_path, body, {"Content-Type": "application/json"})
            if conn.getresponse().status == 200:
                return server, time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.05)
    logs_out = podman(env, "logs", name, check=False).stderr[-2000:]
    podman(env, "rm", "-f", name, check=False)
    raise SystemExit(f"{side} server gave no 200 within 180 s:\n{logs_out}")


def print_table(builds: dict[str, dict[str, float]], sizes: dict[str, float], starts: dict[str, list[float]],
                timings: dict[tuple[str, str], tuple[list[float], float]],
                rounds: dict[tuple[str, str], list[float]]) -> None:
    rows: list[tuple[str, float, float, str]] = [("image size (MB)", sizes["ours"], sizes[THEIRS], "image size")]
    rows += [(f"build, {kind} (s)", builds["ours"][kind], builds[THEIRS][kind], "")
             for kind in builds["ours"]]
    rows.append(("cold start to first 200 (s)", statistics.median(starts["ours"]),
                 statistics.median(starts[THEIRS]), "cold start"))
    rows.append(("  ours, model from the server", statistics.median(starts[FROM_SERVER]),
                 statistics.median(starts[THEIRS]), "cold start"))
    for load in ("1 review", "100 reviews"):
        (ours, ours_s), (theirs, theirs_s) = timings[load, "ours"], timings[load, THEIRS]
        rows.append((f"{load}: req/s", len(ours) / ours_s, len(theirs) / theirs_s, load))
        rows.append((f"{load}: p99 (ms)", float(np.percentile(ours, 99)), float(np.percentile(theirs, 99)), ""))
    print(f"\n{'':<30} {'ours':>10} {'MLflow':>10} {'ours/MLflow':>12}  goal")
    print("-" * 72)
    for label, ours_value, theirs_value, goal in rows:
        ratio = ours_value / theirs_value
        target = GOALS.get(goal)
        verdict = "" if target is None else f"{'≤' if target < 1 else '≥'} {target}× " + (
            "met" if (ratio <= target if target < 1 else ratio >= target) else "NOT met")
        print(f"{label:<30} {ours_value:>10.2f} {theirs_value:>10.2f} {ratio:>11.2f}×  {verdict}")
    for load in ("1 review", "100 reviews"):
        ratios = [ours / theirs for ours, theirs in zip(rounds[load, "ours"], rounds[load, THEIRS], strict=True)]
        print(f"{load}: req/s ours/MLflow by round: {', '.join(f'{r:.2f}×' for r in ratios)}")
    print("cold starts (s): " + "; ".join(f"{side} {', '.join(f'{s:.2f}' for s in seconds)}"
                                           for side, seconds in starts.items()))


if __name__ == "__main__":
    sys.exit(main())
