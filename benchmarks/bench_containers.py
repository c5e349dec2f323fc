"""Our image against MLflow's own serving image for the same registered model, both built here on
the same Debian base with podman (README, "Containers"): image size, build times, cold start to
the first 200, req/s and p99 for single reviews and for batches of 100.

    python benchmarks/bench_containers.py             # about 12 min on 2 cores, most of it cold builds
    python benchmarks/bench_containers.py --no-cold   # skip the two builds without cache

MLflow's image is what `mlflow models generate-dockerfile` writes for the champion, with its first
line changed only as far as the shared base needs: `FROM` the base, and a venv on PATH because Debian's
python3 has no pip. Its server is MLflow's (nginx in front of uvicorn, one worker per CPU it sees);
ours is `serve_api.py` with its durable prediction log (SQLite, on a volume) — an answer is sent only
once it is on record. Both containers get the same single CPU (the clients use the others) and the
same memory of the page cache: each is started three times, the median cold start is shown.

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
GOALS = {"image size": 0.5, "cold start": 0.5, "1 review": 3.0, "100 reviews": 2.0}  # ours / MLflow's


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-cold", action="store_true", help="skip the builds without cache")
    parser.add_argument("--single", type=int, default=1500, help="single-review requests per server")
    parser.add_argument("--batches", type=int, default=300, help="100-review requests per server")
    args = parser.parse_args()
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
        builds: dict[str, dict[str, float]] = {"ours": {}, "MLflow's": {}}
        for side, context, tag in (("ours", ours_context, "localhost/bench-ours"),
                                   ("MLflow's", theirs_context, "localhost/bench-mlflow")):
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
        builds["MLflow's"]["after a change"] = build(env, "localhost/bench-mlflow", theirs_context, base)
        # Back to the same champion for both before they are compared.
        generate(host_env, champion, theirs_context, base)
        build(env, "localhost/bench-mlflow", theirs_context, base)

        sizes = {side: image_size(env, tag) for side, tag in (("ours", "localhost/bench-ours"),
                                                              ("MLflow's", "localhost/bench-mlflow"))}
        starts: dict[str, list[float]] = {"ours": [], "MLflow's": []}
        timings: dict[tuple[str, str], tuple[list[float], float]] = {}
        for attempt in range(3):
            for side in ("ours", "MLflow's") if attempt % 2 == 0 else ("MLflow's", "ours"):
                server, seconds = start(env, side, store, texts)
                starts[side].append(seconds)
                print(f"{side} server: first 200 {seconds:.2f} s after `podman run`", flush=True)
                try:
                    if attempt == 2:
                        print(f"Driving {side} server…", flush=True)
                        for load, size, count in (("1 review", 1, args.single), ("100 reviews", 100, args.batches)):
                            timings[load, side] = drive(server, texts, size, count, 1)
                finally:
                    podman(env, "rm", "-f", server.name)
    print_table(builds, sizes, starts, timings)
    return 0


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
    lines[first:first + 1] = [f"FROM {base}", "ARG PIP_CERT", "RUN python3 -m venv /opt/venv",
                              "ENV PATH=/opt/venv/bin:$PATH"]
    dockerfile.write_text("\n".join(lines) + "\n")


def image_size(env: dict[str, str], tag: str) -> float:
    return int(podman(env, "image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e6


def start(env: dict[str, str], side: str, store: Path, texts: list[str]) -> tuple[Server, float]:
    """A container of `side` on the last CPU; seconds from `podman run` to its first 200 on a prediction."""
    port = free_port()
    name = f"bench-{'ours' if side == 'ours' else 'mlflow'}-{port}"
    common = ["run", "-d", "--name", name, f"--cpuset-cpus={CPUS[-1]}"]
    if side == "ours":
        server = Server(name, port, "/health", "/predict", "reviews", None)
        logs = store.parent / f"log-{port}"  # a fresh prediction log each start, on a volume
        logs.mkdir()
        logs.chmod(0o777)
        args = [*common, "-p", f"127.0.0.1:{port}:8000", "-v", f"{store}:{store}", "-v", f"{logs}:/data",
                "-e", f"MLFLOW_TRACKING_URI=sqlite:///{store}/mlflow.db", "-e", "REVIEW_SENTIMENT_API_KEY=bench",
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
                timings: dict[tuple[str, str], tuple[list[float], float]]) -> None:
    rows: list[tuple[str, float, float, str]] = [("image size (MB)", sizes["ours"], sizes["MLflow's"], "image size")]
    rows += [(f"build, {kind} (s)", builds["ours"][kind], builds["MLflow's"][kind], "")
             for kind in builds["ours"]]
    rows.append(("cold start to first 200 (s)", statistics.median(starts["ours"]),
                 statistics.median(starts["MLflow's"]), "cold start"))
    for load in ("1 review", "100 reviews"):
        (ours, ours_s), (theirs, theirs_s) = timings[load, "ours"], timings[load, "MLflow's"]
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
    print(f"\ncold starts (s): ours {', '.join(f'{s:.2f}' for s in starts['ours'])}; "
          f"MLflow's {', '.join(f'{s:.2f}' for s in starts[THEIRS])}")


if __name__ == "__main__":
    sys.exit(main())
