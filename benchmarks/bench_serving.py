"""Our prediction service against `mlflow models serve`, same registered model, same load.

    python benchmarks/bench_serving.py                       # trains on the sample in a temp store
    python benchmarks/bench_serving.py --tracking-uri sqlite:///mlflow.db --single 2000 --batches 300

Both servers run on this machine and serve the same `champion` version; one client sends
single-review requests one at a time, then batches of 100, over a kept-alive connection, and
prints p50/p99 latency and requests per second side by side. Our service logs every prediction.
"""
from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT))

from review_sentiment.constants import SAMPLE_DATA  # noqa: E402

MODEL_URI = "models:/FlipkartSentimentModel@champion"


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    ready_path: str
    predict_path: str
    payload_key: str
    process: subprocess.Popen

    def body(self, reviews: list[str]) -> bytes:
        return json.dumps({self.payload_key: reviews}).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="store holding a champion (default: train one on the sample)")
    parser.add_argument("--single", type=int, default=1500, help="single-review requests per server")
    parser.add_argument("--batches", type=int, default=300, help="100-review requests per server")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds the requests are split into")
    args = parser.parse_args()
    texts = pd.read_csv(SAMPLE_DATA)["Review text"].dropna().astype(str).tolist()

    with tempfile.TemporaryDirectory() as tmp:
        store = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
        env = dict(os.environ, MLFLOW_TRACKING_URI=store, MLFLOW_REGISTRY_URI=store,
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        if not args.tracking_uri:
            print("Training a champion on the sample in a temporary store…", flush=True)
            subprocess.run([sys.executable, str(PROJECT / "sentiment_mlflow_optuna.py"), "--trials", "6",
                            "--folds", "3"], cwd=tmp, env=env, check=True, stdout=subprocess.DEVNULL)
        servers = [start_ours(env, tmp), start_mlflow(env, tmp)]
        try:
            for server in servers:
                wait_ready(server)
            check_same_labels(servers, texts[:100])
            rows = []
            for load, size, count in (("1 review/request", 1, args.single), ("100 reviews/request", 100, args.batches)):
                timings = {server.name: ([], 0.0) for server in servers}
                for round_ in range(args.rounds):  # interleaved, so drift on the machine hits both alike
                    for server in servers[::1 if round_ % 2 == 0 else -1]:
                        latencies, elapsed = drive(server, texts, size, count // args.rounds)
                        timings[server.name] = (timings[server.name][0] + latencies, timings[server.name][1] + elapsed)
                for name, (latencies, elapsed) in timings.items():
                    rows.append((load, name, float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)),
                                 len(latencies) / elapsed, len(latencies) * size / elapsed))
        finally:
            for server in servers:
                server.process.terminate()
                server.process.wait(timeout=30)
    print_table(rows)
    return 0


def start_ours(env: dict, tmp: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(PROJECT / "serve_api.py"), "--port", str(port),
         "--prediction-log", f"{tmp}/predictions.db"],
        cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server("serve_api.py", port, "/health", "/predict", "reviews", process)


def start_mlflow(env: dict, tmp: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Server("mlflow models serve", port, "/ping", "/invocations", "inputs", process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise SystemExit(f"{server.name} exited with status {server.process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
            conn.request("GET", server.ready_path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{server.name} not ready after {timeout:.0f} s")


def post(conn: http.client.HTTPConnection, server: Server, body: bytes) -> bytes:
    """One request, its whole answer read; the answer is parsed only where it is checked, so the
    client's JSON work (larger for our richer answer) is not timed as server latency."""
    conn.request("POST", server.predict_path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise SystemExit(f"{server.name}: HTTP {response.status}: {payload[:200]!r}")
    return payload


def check_same_labels(servers: list[Server], reviews: list[str]) -> None:
    """Both must be serving the same model, or the comparison means nothing."""
    ours, theirs = (json.loads(post(http.client.HTTPConnection("127.0.0.1", s.port), s, s.body(reviews)))
                    for s in servers)
    if [p["label_id"] for p in ours["predictions"]] != theirs["predictions"]:
        raise SystemExit("the two servers disagree on the same reviews: not the same model")


def drive(server: Server, texts: list[str], size: int, count: int) -> tuple[list[float], float]:
    """Latencies (ms) of `count` sequential requests of `size` reviews, and the seconds they took."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    bodies = [server.body([texts[(i * size + j) % len(texts)] for j in range(size)]) for i in range(count)]
    for body in bodies[:20]:
        post(conn, server, body)  # warm-up
    gc.collect()
    gc.freeze()  # keep the client's own garbage collection out of the timings
    latencies = []
    started = time.perf_counter()
    for body in bodies:
        t = time.perf_counter()
        post(conn, server, body)
        latencies.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    return latencies, elapsed


def print_table(rows: list[tuple]) -> None:
    print(f"\n{'load':<20} {'server':<20} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'reviews/s':>10}")
    print("-" * 78)
    for load, name, p50, p99, rps, reviews in rows:
        print(f"{load:<20} {name:<20} {p50:>8.2f} {p99:>8.2f} {rps:>8.0f} {reviews:>10.0f}")
    print("-" * 78)
    for ours, theirs in zip(rows[::2], rows[1::2], strict=True):
        print(f"{ours[0]:<20} ours vs mlflow: {ours[4] / theirs[4]:.2f}× req/s, p99 {ours[3] / theirs[3]:.2f}×")


if __name__ == "__main__":
    sys.exit(main())
