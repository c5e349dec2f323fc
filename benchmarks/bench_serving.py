"""Our prediction service, with its durable prediction log and without any log, against
`mlflow models serve`: same registered model, same load.

    python benchmarks/bench_serving.py                       # trains on the sample in a temp store
    python benchmarks/bench_serving.py --tracking-uri sqlite:///mlflow.db --single 2000 --batches 300
    python benchmarks/bench_serving.py --reviews ../shared/data/flipkart_laptop_reviews.csv --text-col Review

All three servers run on this machine and serve the same `champion` version. Loads: single-review
requests from one client, then from 8 concurrent clients, then batches of 100 from one client, each
client on its own kept-alive connection; the servers get one CPU, the clients the rest. Prints
p50/p99 latency and requests per second side by side, and what the durable log costs: with the
log, a prediction is answered only once committed.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import re
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
CPUS = sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Server:
    name: str
    port: int
    ready_path: str
    predict_path: str
    payload_key: str
    process: subprocess.Popen | None  # None: started elsewhere (a container)

    def body(self, reviews: list[str]) -> bytes:
        return json.dumps({self.payload_key: reviews}).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="store holding a champion (default: train one on the sample)")
    parser.add_argument("--single", type=int, default=1500, help="single-review requests per server")
    parser.add_argument("--batches", type=int, default=300, help="100-review requests per server")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds the requests are split into, each on freshly started servers")
    parser.add_argument("--reviews", type=Path, default=SAMPLE_DATA, help="CSV whose texts the requests send")
    parser.add_argument("--text-col", default="Review text", help="its review text column")
    args = parser.parse_args()
    if len(CPUS) > 1:
        os.sched_setaffinity(0, CPUS[:-1])
    texts = pd.read_csv(args.reviews)[args.text_col].dropna().astype(str).tolist()

    with tempfile.TemporaryDirectory() as tmp:
        store = args.tracking_uri or f"sqlite:///{tmp}/mlflow.db"
        env = dict(os.environ, MLFLOW_TRACKING_URI=store, MLFLOW_REGISTRY_URI=store,
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        if not args.tracking_uri:
            train_champion(env, tmp)
        timings: dict[tuple[str, str], tuple[list[float], float]] = {}
        per_round: dict[tuple[str, str], list[float]] = {}  # req/s
        for round_ in range(args.rounds):
            # Fresh processes every round: one process of a configuration can run ~10% faster than
            # another of the same (memory layout), which would otherwise favour a side for the whole run.
            servers = [start_ours(env, tmp, "--prediction-log", f"{tmp}/predictions.db"),
                       start_ours(env, tmp, "--no-prediction-log"), start_mlflow(env, tmp)]
            try:
                for server in servers:
                    wait_ready(server)
                check_same_labels(servers, texts[:100])
                print(f"Round {round_ + 1}/{args.rounds}…", flush=True)
                for load, size, clients, count in loads(args):
                    for server in servers[::1 if round_ % 2 == 0 else -1]:  # interleaved: drift hits all alike
                        latencies, elapsed = drive(server, texts, size, count // args.rounds, clients)
                        before = timings.get((load, server.name), ([], 0.0))
                        timings[load, server.name] = (before[0] + latencies, before[1] + elapsed)
                        per_round.setdefault((load, server.name), []).append(len(latencies) / elapsed)
            finally:
                for server in servers:
                    if server.process is not None:
                        server.process.terminate()
                        server.process.wait(timeout=30)
    sizes = {load: size for load, size, _, _ in loads(args)}
    print_table([(load, name, float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)),
                  len(latencies) / elapsed, len(latencies) * sizes[load] / elapsed)
                 for (load, name), (latencies, elapsed) in timings.items()], per_round)
    return 0


def train_champion(env: dict, folder: str) -> None:
    """A champion (and two other versions) tuned on the sample into the store `env` names."""
    print("Training a champion on the sample in a temporary store…", flush=True)
    subprocess.run([sys.executable, str(PROJECT / "sentiment_mlflow_optuna.py"), "--trials", "6", "--folds", "3"],
                   cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)


def loads(args: argparse.Namespace) -> list[tuple[str, int, int, int]]:
    """(name, reviews per request, concurrent clients, requests per server)."""
    return [("1 review, 1 client", 1, 1, args.single), ("1 review, 8 clients", 1, 8, args.single * 2),
            ("100 reviews, 1 client", 100, 1, args.batches)]


def on_server_cpu() -> None:
    """Servers on the last CPU, the clients (this process) on the others, so they do not take turns."""
    if len(CPUS) > 1:
        os.sched_setaffinity(0, CPUS[-1:])


def start_ours(env: dict, tmp: str, *log_flags: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(PROJECT / "serve_api.py"), "--port", str(port), *log_flags],
        cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on_server_cpu)
    name = "ours, log off" if "--no-prediction-log" in log_flags else "ours, durable log"
    return Server(name, port, "/health", "/predict", "reviews", process)


def start_mlflow(env: dict, tmp: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=on_server_cpu)
    return Server("mlflow models serve", port, "/ping", "/invocations", "inputs", process)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(server: Server, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process is not None and server.process.poll() is not None:
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
    """All must be serving the same model, or the comparison means nothing."""
    answers = [json.loads(post(http.client.HTTPConnection("127.0.0.1", s.port), s, s.body(reviews))) for s in servers]
    labels = [[p["label_id"] for p in a["predictions"]] if s.payload_key == "reviews" else a["predictions"]
              for s, a in zip(servers, answers, strict=True)]
    if any(other != labels[0] for other in labels[1:]):
        raise SystemExit("the servers disagree on the same reviews: not the same model")


def drive(server: Server, texts: list[str], size: int, count: int, clients: int) -> tuple[list[float], float]:
    """Latencies (ms) of `count` requests of `size` reviews, sent one after another by each of
    `clients` concurrent clients, and the seconds they all took. The clients are asyncio streams
    in one thread, each request's bytes built beforehand: a few µs of client work per request, so
    the servers, not the client, are what is measured."""
    requests = [request_bytes(server, server.body([texts[(i * size + j) % len(texts)] for j in range(size)]))
                for i in range(count)]
    return asyncio.run(_drive(server, requests, clients))


def request_bytes(server: Server, body: bytes) -> bytes:
    return (f"POST {server.predict_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def exchange(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> bool:
    """One request on a kept-alive connection, its whole answer read (and not parsed: not timed); True
    if the server closes the connection after it (nginx, in front of MLflow's image, does every 1,000)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if length is None:
        raise SystemExit(f"{server.name}: an answer without Content-Length: {head[:200]!r}")
    body = await reader.readexactly(int(length.group(1)))
    if not head.startswith(b"HTTP/1.1 200 "):
        raise SystemExit(f"{server.name}: {head.splitlines()[0]!r}: {body[:200]!r}")
    return re.search(rb"(?i)\r\nconnection: *close", head) is not None


async def _drive(server: Server, requests: list[bytes], clients: int) -> tuple[list[float], float]:
    connections = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(clients)]
    for reader, writer in connections:
        for request in requests[:20]:
            await exchange(server, reader, writer, request)  # warm-up
    latencies: list[float] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mine: list[bytes]) -> None:
        for request in mine:
            t = time.perf_counter()
            closing = await exchange(server, reader, writer, request)
            latencies.append((time.perf_counter() - t) * 1000)
            if closing:  # a new connection, as any client would open: counted in the req/s, not the latency
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.close()

    gc.collect()
    gc.freeze()  # keep the client's own garbage collection out of the timings
    started = time.perf_counter()
    await asyncio.gather(*(client(reader, writer, requests[n::clients])
                           for n, (reader, writer) in enumerate(connections)))
    elapsed = time.perf_counter() - started
    gc.unfreeze()
    return latencies, elapsed


def print_table(rows: list[tuple], per_round: dict[tuple[str, str], list[float]]) -> None:
    print(f"\n{'load':<20} {'server':<20} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'reviews/s':>10}")
    print("-" * 78)
    for load, name, p50, p99, rps, reviews in rows:
        print(f"{load:<20} {name:<20} {p50:>8.2f} {p99:>8.2f} {rps:>8.0f} {reviews:>10.0f}")
    print("-" * 78)
    for logged, unlogged, theirs in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        rounds = [1 - on / off for on, off in zip(per_round[logged[:2]], per_round[unlogged[:2]], strict=True)]
        print(f"{logged[0]:<22} durable log costs {1 - logged[4] / unlogged[4]:>6.1%} of req/s "
              f"(rounds: {', '.join(f'{r:.0%}' for r in rounds)}), p50 {logged[2] - unlogged[2]:+.2f} ms, p99 "
              f"{logged[3] - unlogged[3]:+.2f} ms; ours (log on) vs mlflow: {logged[4] / theirs[4]:.2f}× req/s")


if __name__ == "__main__":
    sys.exit(main())
