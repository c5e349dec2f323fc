"""How the whole tuning run grows with the data: 10k, 100k and 1M generated reviews, as whole processes.

    python benchmarks/bench_scale.py                          # 10,000 100,000 1,000,000 reviews
    python benchmarks/bench_scale.py --sizes 10000 100000 --keep
    python benchmarks/bench_scale.py --write-readme           # and put the table in README.md's Scale section

Per size: generates the reviews with data/make_sample_reviews.py (timed on its own: it is not part
of the run), then runs `sentiment_mlflow_optuna.py --data FILE --trials 5` (3 families x 5 trials,
the default folds: 5, or 3 above 500,000 usable reviews; all tracking and registration) in a fresh
folder with a fresh SQLite tracking store.
Prints wall seconds, peak memory, µs per review and the scaling exponent log(t2/t1)/log(n2/n1)
between consecutive sizes (1: linear), then where the time went (phases from the run's progress
lines) and which phase held the most memory.

Peak memory is the peak of the memory of the run and all its descendants, sampled every --interval
seconds with psutil: RSS while it is one process, the sum of PSS while it has children (forked
processes share pages; summed RSS would count those twice). A spike shorter than the interval can
be missed. The run's ru_maxrss from wait4 (the largest single process of the tree, exact) is
printed beside it.
Other jobs on the machine add noise to the times: run on a quiet machine, or repeat.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PROJECT = Path(__file__).resolve().parents[1]
GOAL_SECONDS, GOAL_BYTES = 300, 3 * 2**30  # at 1M reviews
FAMILY = re.compile(r"^(\w+): \d+ trials")  # the progress line that starts a family's trials
README_TABLE = re.compile(r"(<!-- scale table: written by benchmarks/bench_scale.py --write-readme -->\n).*?"
                          r"(<!-- end of scale table -->)", re.S)


@dataclass
class Sampled:
    """Memory of a process tree over time (`tree_memory`)."""

    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def peak(self, start: float = 0.0, end: float = math.inf) -> int:
        return max((r for t, r in zip(self.times, self.rss, strict=True) if start <= t < end), default=0)


def tree_memory(proc: psutil.Process) -> int:
    """RSS of the process; with children (forked workers share pages with it until they write them),
    the sum of every process's PSS, which counts a shared page once."""
    try:
        processes = [proc, *proc.children(recursive=True)]
        if len(processes) == 1:
            return proc.memory_info().rss
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_full_info().pss
    return total


def watched(cmd: list[str], cwd: str, env: dict[str, str], interval: float, log: Path | None = None
            ) -> tuple[float, Sampled, list[tuple[float, str]], int]:
    """Run `cmd`; return wall seconds, its sampled tree RSS, its stdout lines with their times (also
    written to `log` as they come), and the largest ru_maxrss among it and its descendants (bytes)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, sampled, done = psutil.Process(proc.pid), Sampled(), threading.Event()

    def sample() -> None:
        while not done.is_set():
            sampled.times.append(time.perf_counter() - started)
            sampled.rss.append(tree_memory(ps))
            done.wait(interval)

    stderr: list[str] = []
    threads = [threading.Thread(target=sample, daemon=True),
               threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)]
    for thread in threads:
        thread.start()
    lines = []
    with open(log or os.devnull, "w") as out:
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
            out.write(f"{lines[-1][0]:8.2f} {lines[-1][1]}\n")
            out.flush()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    done.set()
    for thread in threads:
        thread.join()
    if proc.returncode:
        out = "\n".join(line for _, line in lines)
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}\n{''.join(stderr)[-3000:]}")
    return elapsed, sampled, lines, usage.ru_maxrss * 1024  # KiB on Linux


ENDING = "the last publications, promotion"  # the phase after a family's refit, unless another family starts


def phases(lines: list[tuple[float, str]], end: float) -> list[tuple[str, float, float]]:
    """(name, start, end) of each phase of the run, from the times its progress lines were printed."""
    marks: list[tuple[str, float]] = [("start-up, imports, read CSV, dedupe, split", 0.0)]
    last_trial = 0.0
    for at, line in lines:
        if line.startswith("Split: "):
            marks.append(("clean, count the folds, data digest", at))
        elif line.startswith("Optuna: "):
            marks.append(("MLflow + Optuna stores, parent runs", at))
        elif m := FAMILY.match(line):
            if marks[-1][0] == ENDING:  # not yet: another family starts
                marks.pop()
            marks.append((f"{m.group(1)} trials", at))
        elif line.startswith("  trial "):
            last_trial = at
        elif line.startswith("  best CV F1"):
            marks.append(("  refit, evaluate, log (the model is published beside what follows)", last_trial))
            marks.append((ENDING, at))
        elif line.startswith("Champion: "):
            marks.append(("exit", at))
    return [(name, start, marks[i + 1][1] if i + 1 < len(marks) else end) for i, (name, start) in enumerate(marks)]


def generate(rows: int, seed: int, out: Path, interval: float) -> tuple[float, int]:
    cmd = [sys.executable, str(PROJECT / "data" / "make_sample_reviews.py"), "--rows", str(rows), "--seed",
           str(seed), "--out", str(out)]
    seconds, sampled, _, _ = watched(cmd, str(out.parent), dict(os.environ), interval)
    return seconds, sampled.peak()


def tuning_run(reviews: Path, folder: Path, trials: int, interval: float, extra: list[str]
               ) -> tuple[float, Sampled, list[tuple[float, str]], int]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}", "PYTHONPATH": str(PROJECT),
           "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(PROJECT / "sentiment_mlflow_optuna.py"), "--data", str(reviews), "--trials",
           str(trials), *extra]
    seconds, sampled, lines, maxrss = watched(cmd, str(folder), env, interval, folder / "stdout.txt")
    (folder / "rss.txt").write_text("".join(f"{t:.2f} {r}\n" for t, r in zip(sampled.times, sampled.rss, strict=True)))
    return seconds, sampled, lines, maxrss


def gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


Row = tuple[int, float, float, int, int]  # reviews, generate s, run s, peak bytes of the tree, largest process


def exponent(rows: list[Row], i: int) -> str:
    """How run time grew from the size before: log(t2/t1)/log(n2/n1) (1: linear)."""
    return f"{math.log(rows[i][2] / rows[i - 1][2]) / math.log(rows[i][0] / rows[i - 1][0]):.2f}" if i else ""


def write_readme(rows: list[Row], trials: int) -> None:
    """Replace the table between README.md's scale-table markers with this run's."""
    readme = PROJECT / "README.md"
    table = "\n".join([
        f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores: 3 families × {trials} trials, the default folds "
        f"(5; 3 above 500,000 usable reviews), fresh stores, generated reviews.", "",
        "| reviews | run s | peak GiB | µs / review | growth (exponent) |", "| --- | --- | --- | --- | --- |",
        *(f"| {size:,} | {seconds:.1f} | {gib(peak)} | {seconds / size * 1e6:,.0f} | {exponent(rows, i)} |"
          for i, (size, _, seconds, peak, _) in enumerate(rows)), ""])
    text, found = README_TABLE.subn(lambda m: m.group(1) + table + m.group(2), readme.read_text(encoding="utf-8"))
    if found != 1:
        sys.exit(f"{readme}: no scale table between its markers to replace")
    readme.write_text(text, encoding="utf-8")
    print(f"wrote the table into {readme}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--trials", type=int, default=5, help="Optuna trials per family")
    parser.add_argument("--seed", type=int, default=3, help="the generator's seed")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between memory samples")
    parser.add_argument("--keep", action="store_true", help="keep the generated reviews and the runs' folders")
    parser.add_argument("--data-dir", type=Path, help="reuse reviews_<N>.csv here if present (not timed again)")
    parser.add_argument("--write-readme", action="store_true", help="put the table in README.md's Scale section")
    parser.add_argument("extra", nargs="*", help="more flags for the tuning script, after --")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    probe = subprocess.run([sys.executable, "-c", "import review_sentiment; print(review_sentiment.__file__)"],
                           env={**os.environ, "PYTHONPATH": str(PROJECT)}, capture_output=True, text=True)
    print(f"project {PROJECT} (review_sentiment from {probe.stdout.strip()}); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f}; folder {root}", flush=True)
    rows: list[Row] = []
    try:
        for size in args.sizes:
            data = (args.data_dir or root) / f"reviews_{size}.csv"
            if args.data_dir and data.exists():
                gen_s, gen_peak = math.nan, 0
            else:
                data.parent.mkdir(parents=True, exist_ok=True)
                gen_s, gen_peak = generate(size, args.seed, data, args.interval)
            print(f"{size:>9,} reviews: generated in {gen_s:.1f} s ({gen_s / size * 1e6:.1f} µs/review, "
                  f"peak {gib(gen_peak)} GiB), {data.stat().st_size / 2**20:.0f} MiB; tuning ...", flush=True)
            folder = root / f"run_{size}"
            folder.mkdir()
            seconds, sampled, lines, maxrss = tuning_run(data, folder, args.trials, args.interval, args.extra)
            rows.append((size, gen_s, seconds, sampled.peak(), maxrss))
            print(f"{size:>9,} reviews: {seconds:.1f} s, peak {gib(sampled.peak())} GiB "
                  f"(largest process {gib(maxrss)} GiB), "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
            for name, start, end in phases(lines, seconds):
                print(f"    {name:<44}{end - start:8.1f} s  peak {gib(sampled.peak(start, end))} GiB")
            summary = [line for _, line in lines if "| CV F1=" in line]
            print("\n".join(f"    {line.rsplit('|', 1)[0]}" for line in summary), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'reviews':>10} {'generate s':>11} {'run s':>8} {'peak GiB':>9} {'max proc GiB':>13} "
          f"{'µs/review':>10} {'exponent':>9}")
    for i, (size, gen_s, seconds, peak, maxrss) in enumerate(rows):
        print(f"{size:>10,} {gen_s:>11.1f} {seconds:>8.1f} {gib(peak):>9} {gib(maxrss):>13} "
              f"{seconds / size * 1e6:>10.0f} {exponent(rows, i):>9}")
    last = rows[-1]
    if last[0] >= 1_000_000:
        print(f"goal at 1M: <= {GOAL_SECONDS} s and <= {gib(GOAL_BYTES)} GiB: "
              f"{'met' if last[2] <= GOAL_SECONDS and last[3] <= GOAL_BYTES else 'not met'}")
    if args.write_readme:
        write_readme(rows, args.trials)
    if args.keep:
        print(f"kept: {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
