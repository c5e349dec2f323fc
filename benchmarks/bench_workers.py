"""Tuning with 1 and 2 workers, with the studies in the default journal file, in Optuna's SQLite storage
(`--storage sqlite:///optuna.db`, the default before) and on the shared stack, against the single-process
run of the release before workers existed: whole processes, fresh stores, the same generated reviews.

    python benchmarks/bench_workers.py                    # 8,500 generated reviews, 3 families x 20 trials
    python benchmarks/bench_workers.py --rows 8500 --rounds 2 --baseline-commit 92b11bd

Trials per second: trials finished per second between the first and the last trial's end (child
runs' end times; the release before logged a trial's run only when it ended).
- With defaults: each run as a user starts it (`--workers 1` or `2`; on 8,500 reviews each trial scores
  its folds itself, as `--n-jobs 0` does up to 20,000 usable reviews).
- Pinned: `--n-jobs 1` (each worker scores its folds itself), the run on core 0 and its forked worker
  moved to core 1 as soon as it exists, the run's writer and publisher processes on either core: how
  trials per second scale with workers that each have a core. One worker's run is measured twice: its
  writer and publisher free to use the second core (its trials then share their core with nothing), and
  confined with it to core 0 (the whole run on one core, as `taskset -c 0` would start it: one core
  per worker in both runs).
- Where the pinned runs' CPU went between the first and the last trial's end: each process's CPU time
  (sampled every 50 ms) by what it is (the run, its forked worker, the child-run writer, the publisher),
  the sampler's own (its reads of /proc, ~1 ms a sample: on the same cores, or off a confined run's), and
  the rest of the run's cores' time (idle, or the stack's servers'). On 2 cores, what the writer and the
  publisher do there is taken from two workers' trials, and from none of one worker's (its second core
  is free) unless it is confined. The run's and its workers' CPU per trial (trials, refits, hand-offs,
  divided by the trials finished in the window) shows whether a second worker makes each trial dearer.
- The ceiling: the trials' compute alone (the same objective, folds and Optuna's sampler and pruner, the
  studies in memory: no storage, no tracking, no writer or publisher), one copy on core 0, then two
  copies at once on cores 0 and 1: how far two workers could scale were nothing else beside them.
- Storage and tracking per trial: one worker run in a child process with a timer on every call it makes
  to Optuna's storage and on what writes a trial's child run (`trial_runs.write_trial_runs`), while it runs trials
  (claims included), divided by its trials; the heartbeat thread's calls are counted apart, as beside the
  trials. Child runs are written by the command's writer process (`trial_writer`), out of the trials' way:
  what is timed of them is what writes one on the trials' path, if anything does.

The stack (PostgreSQL, MLflow server, Prefect server) is started in a temporary folder and stopped at
the end.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import functools
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import psutil
from optuna.trial import FrozenTrial, TrialState

from review_sentiment.constants import LOCK_URL_ENV, TRACKING_DB_ENV
from review_sentiment.orchestration.stack import DEFAULT_PORTS, down, up
from review_sentiment.tracking.publisher import NAME as PUBLISHER
from review_sentiment.tracking.trial_runs import ChildRunStore, child_run

PROJECT = Path(__file__).resolve().parents[1]
TRIALS, FAMILIES = 20, 3
PIN_SECONDS = 30  # a run's worker and writer exist within seconds of its start
SAMPLE_SECONDS = 0.05  # each sample costs ~1 ms of CPU (reading /proc for every process), on the same cores
SAMPLER = -1  # the sampler thread's own CPU, among the pids


def generate(rows: int, folder: Path) -> Path:
    path = folder / "reviews.csv"
    subprocess.run([sys.executable, str(PROJECT / "data" / "make_sample_reviews.py"), "--rows", str(rows),
                    "--seed", "3", "--out", str(path)], check=True, capture_output=True)
    return path


def baseline_checkout(commit: str, folder: Path) -> Path:
    """The project as it was at `commit` (a detached worktree), to run its tuning script."""
    subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--detach", "-f", str(folder), commit], check=True,
                   capture_output=True)
    return folder


@dataclass(frozen=True)
class Run:
    seconds: float  # wall, launch to exit
    rate: float  # trials per second, first to last trial's end
    cpu: dict[str, float]  # CPU seconds in that window by process kind (`CpuSampler.spent`), "window": its length
    cores: int  # the cores its processes could use


class CpuSampler:
    """Every process of a run's tree: CPU seconds (user + system) every `SAMPLE_SECONDS`, on a thread."""

    def __init__(self, pid: int, cores: set[int]) -> None:
        """`cores`: where it may run (a confined run's sampler keeps off the run's one core)."""
        self._root = psutil.Process(pid)
        self._cores = cores
        self._times: list[float] = []
        self._cpu: list[dict[int, float]] = []
        self._kinds: dict[int, str] = {}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        """Until the run ends; this thread's own CPU (it reads /proc for every process, ~1 ms a sample) is
        sampled too, as the "sampler", for it may be on the same cores."""
        os.sched_setaffinity(0, self._cores)  # this thread's alone
        while True:
            try:
                if self._root.status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            cpu = {}
            with contextlib.suppress(psutil.NoSuchProcess):
                for process in [self._root, *self._root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        times = process.cpu_times()
                        cpu[process.pid] = times.user + times.system
                        if self._kinds.get(process.pid, "python") == "python":  # a forked child names itself soon
                            self._kinds[process.pid] = self._kind(process)
            cpu[SAMPLER] = time.thread_time()
            self._times.append(time.time())
            self._cpu.append(cpu)
            time.sleep(SAMPLE_SECONDS)

    def _kind(self, process: psutil.Process) -> str:
        return "run" if process.pid == self._root.pid else process_kind(process)

    def spent(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds between the two times (epoch seconds), by process kind; a process's last sample where
        it ended before `end`."""
        self._thread.join(timeout=60)
        assert self._times and self._times[0] <= start, "sampled from the run's start"
        first, last = (min(bisect.bisect_left(self._times, t), len(self._times) - 1) for t in (start, end))
        spent: collections.Counter[str] = collections.Counter()
        for pid, kind in {**self._kinds, SAMPLER: "sampler"}.items():
            seen = [cpu[pid] for cpu in self._cpu[first:last + 1] if pid in cpu]
            if seen:  # a process that ended before the window, or began after it, spent nothing in it
                spent[kind] += seen[-1] - self._cpu[first].get(pid, 0.0)
        return dict(spent)


def tuning_run(project: Path, reviews: Path, env: dict[str, str], *flags: str,
               pin_workers: int | None = None, confined: bool = False) -> Run:
    """One tuning run in a fresh folder. `pin_workers`: the run on core 0 and that many workers it forks
    each on the next core; its writer and publisher on any core, or, `confined`, on the run's core 0."""
    with tempfile.TemporaryDirectory() as work:
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"} | env | {"PYTHONPATH": str(project)}
        # an experiment and a registered model of its own: on the stack, whose store every run shares, a run
        # after the first would else compare its candidate with the champion an earlier run left (~1.5 s)
        experiment = f"bench-{time.time_ns()}"
        started = time.perf_counter()
        with subprocess.Popen([sys.executable, str(project / "sentiment_mlflow_optuna.py"), "--data", str(reviews),
                               "--experiment", experiment, "--registered-model", experiment, *flags], cwd=work,
                              env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=None if pin_workers is None else lambda: os.sched_setaffinity(0, {0})) as run:
            mine = os.sched_getaffinity(0)
            # the run's cores: pinned, those of its workers (two at least: one worker's helpers take the second)
            cores = mine if pin_workers is None else {0} if confined else set(range(max(2, pin_workers + 1)))
            sampler = CpuSampler(run.pid, (mine - cores if confined else set()) or mine)  # off a confined run's core
            if pin_workers is not None:
                _pin_forked_workers(run, pin_workers, helpers_to=None if confined else cores)
            stdout, stderr = run.communicate()
        seconds = time.perf_counter() - started
        if run.returncode:
            sys.exit(f"failed ({project}, {flags}):\n{stdout[-2000:]}\n{stderr[-3000:]}")
        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        runs = mlflow.search_runs(experiment_names=[experiment])
        runs = runs[runs["tags.mlflow.parentRunId"].notna()]
        ends = runs.end_time.sort_values()  # the release before logged a trial's run only when it ended
        first, last = ends.iloc[0].timestamp(), ends.iloc[-1].timestamp()
        return Run(seconds, (len(ends) - 1) / (last - first), sampler.spent(first, last) | {"window": last - first},
                   len(cores))


def process_kind(process: psutil.Process) -> str:
    """What a child of a run is: the writer (`trial_writer`), a worker (forked: w1, w2, … in ps), else its
    name (the publisher's, or "python" for a child that has not named itself yet). The writer by its
    command line first: until it starts its own program it has the run's, and its name."""
    if "review_sentiment.tracking.trial_writer" in process.cmdline():
        return "writer"
    name = process.name()
    return "worker" if name[:1] == "w" and name[1:].isdigit() else name


def _pin_forked_workers(run: subprocess.Popen[str], workers: int, helpers_to: set[int] | None) -> None:
    """Move each worker the run forks (named w1, w2, … in ps) to its own core, 1, 2, …, and let the run's
    writer process (`trial_writer`) and its publisher (`publisher`) go on any of `helpers_to` (None: they
    stay on the run's core 0, where they were started). Gives up after `PIN_SECONDS` (nobody reads the
    run's output meanwhile), and says so."""
    pinned: set[int] = set()
    freed: set[str] = set()
    parent = psutil.Process(run.pid)
    run_command = parent.cmdline()
    deadline = time.monotonic() + PIN_SECONDS

    def unfinished() -> bool:
        return run.poll() is None and (len(pinned) < workers or (helpers_to is not None and len(freed) < 2))

    while unfinished() and time.monotonic() < deadline:
        for child in parent.children():
            try:
                kind = process_kind(child)
                if helpers_to is not None and kind in ("writer", PUBLISHER) and kind not in freed:
                    child.cpu_affinity(sorted(helpers_to))
                    freed.add(kind)
                elif (kind == "worker" and child.pid not in pinned and len(pinned) < workers
                      and child.cmdline() == run_command):
                    child.cpu_affinity([len(pinned) + 1])
                    pinned.add(child.pid)
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.01)
    if unfinished():
        print(f"warning: after {PIN_SECONDS} s, {len(pinned)} of {workers} workers pinned, "
              f"helpers freed: {sorted(freed) if helpers_to is not None else 'none asked'}", file=sys.stderr,
              flush=True)


def storage_ms_per_trial(reviews: Path, env: dict[str, str]) -> tuple[float, float, dict[str, float]]:
    """ms of storage and tracking per trial on the trials' path, ms beside it (the heartbeat thread), and ms
    by call: one worker, 3 families x 20 trials (`profile`)."""
    with tempfile.TemporaryDirectory() as work:
        env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"} | env | {"PYTHONPATH": str(PROJECT)}
        name = f"bench-{time.time_ns()}"  # as `tuning_run`'s
        done = subprocess.run([sys.executable, __file__, "--profile", str(reviews), "--experiment", name,
                               "--registered-model", name], cwd=work, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"failed (storage profile):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        measured = json.loads(done.stdout.splitlines()[-1])
        return measured["ms_per_trial"], measured["beside"], measured["by_call"]


def profile(argv: list[str]) -> None:
    """In this child process: the tuning script with a timer on each call to Optuna's storage (the cache
    studies use, and the storage the claims use) and on what writes a trial's child run (MLflow's calls,
    or the rows inserted on an SQL store: `trial_runs.write_trial_runs`), made while trials run
    (`run_queued_trials`; its heartbeat thread counts as beside the trials); only the outermost call of a
    nest is timed. Prints JSON last."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    from review_sentiment.tracking import trial_runs, trial_writer
    from review_sentiment.training import tuning_run
    from review_sentiment.training.journal import HeartbeatJournal
    spent: collections.defaultdict[str, float] = collections.defaultdict(float)
    inside = threading.local()

    def timed(name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(call)
        def measured(*args: Any, **kwargs: Any) -> Any:
            beside = threading.current_thread().name.startswith("heartbeat")
            if getattr(inside, "timing", False) or not (getattr(inside, "trials", False) or beside):
                return call(*args, **kwargs)
            inside.timing, started = True, time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[f"{name}{' (beside)' * beside}"] += time.perf_counter() - started
                inside.timing = False
        return measured

    for storage in (_CachedStorage, RDBStorage, JournalStorage, HeartbeatJournal):
        for name in [n for n in vars(storage) if (not n.startswith("_") or n == "_get_stale_trial_ids")
                     and callable(getattr(storage, n))]:  # the stale check: private, and on every claim
            setattr(storage, name, timed(f"optuna {name}", getattr(storage, name)))
    for name in ("create_run", "log_batch", "set_terminated"):
        setattr(mlflow.MlflowClient, name, timed(f"mlflow {name}", getattr(mlflow.MlflowClient, name)))
    # on an SQL store, child runs are inserted without those calls
    trial_runs.write_trial_runs = timed("child runs", trial_runs.write_trial_runs)  # type: ignore[assignment]
    run_trials, ran = tuning_run.run_queued_trials, [0]

    def counted(*args: Any, **kwargs: Any) -> int:
        inside.trials = True
        try:
            these = run_trials(*args, **kwargs)
        finally:
            inside.trials = False
        ran[0] += these
        return these

    tuning_run.run_queued_trials = counted
    # as the command run from a shell writes child runs (this process imported MLflow, to time its calls)
    trial_writer.trial_writer = trial_writer.writer_process
    script = runpy.run_path(str(PROJECT / "sentiment_mlflow_optuna.py"))
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        script["main"](["--data", *argv, "--n-jobs", "1"])
    print(json.dumps({"ms_per_trial": sum(v for k, v in spent.items() if "beside" not in k) * 1000 / ran[0],
                      "beside": sum(v for k, v in spent.items() if "beside" in k) * 1000 / ran[0],
                      "by_call": {k: v * 1000 / ran[0] for k, v in sorted(spent.items(), key=lambda kv: -kv[1])[:6]}}))


def compute_only(argv: list[str]) -> None:
    """In this child process: the 3 families' trials on the reviews `argv[0]` as the tuning run scores them
    (`--n-jobs 1`), the studies in memory; prints the trials per second of the trials alone, last."""
    from review_sentiment.constants import FAMILY_NAMES
    from review_sentiment.data.reviews import load_reviews
    from review_sentiment.training.study import fold_scorer, objective, pruner, sampler
    from review_sentiment.training.tuning_run import TuningSettings, prepare

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = TuningSettings(data=Path(argv[0]), text_col="Review text", rating_col="Ratings",
                              models=list(FAMILY_NAMES), trials=TRIALS, folds=5, test_size=0.3, seed=42, n_jobs=1,
                              experiment="", registered_model="")
    with contextlib.redirect_stdout(sys.stderr):
        prepared = prepare(settings, load_reviews(settings.data, settings.text_col, settings.rating_col))
    started = time.perf_counter()
    with fold_scorer(prepared.folds, 1) as scores_of:
        for family in settings.models:
            study = optuna.create_study(direction="maximize", sampler=sampler(settings.seed, shared=False),
                                        pruner=pruner())
            study.optimize(objective(family, prepared.folds, scores_of, seed=settings.seed, processes=1),
                           n_trials=TRIALS)
    print(TRIALS * len(settings.models) / (time.perf_counter() - started))


def compute_ceiling(reviews: Path) -> tuple[float, float]:
    """(trials/s of one copy of the trials' compute alone on core 0, of two copies on cores 0 and 1 together)."""
    def started(core: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, __file__, "--compute-only", str(reviews)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: os.sched_setaffinity(0, {core}))

    def rate(copy: subprocess.Popen[str]) -> float:
        out, _ = copy.communicate()
        if copy.returncode:
            sys.exit("failed (the trials' compute alone)")
        return float(out.splitlines()[-1])

    one = rate(started(0))
    together = [started(0), started(1)]
    return one, sum(rate(copy) for copy in together)


def logging_ms(uri: str, database: str = "", calls: int = 40) -> float:
    """Median ms to write one finished trial's child run as the writer does (`ChildRunStore`): inserted in one
    transaction on an SQL store, or into a tracking server's own `database` where given; else MLflow's
    three calls through the server."""
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment(f"bench-logging-{time.time_ns()}")
    parent = client.create_run(experiment).info.run_id
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    trial: FrozenTrial = study.trials[0]
    os.environ[TRACKING_DB_ENV] = database
    store = ChildRunStore(uri)
    del os.environ[TRACKING_DB_ENV]
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        store.write([child_run(experiment, parent, trial, "MAXIMIZE")])
        times.append(time.perf_counter() - started)
    assert trial.state == TrialState.COMPLETE
    return statistics.median(times) * 1000


def window_cpu(run: Run) -> str:
    """CPU seconds in the trials' window by process kind (and this benchmark's sampler), the rest of the
    run's cores' time there (idle, or other processes': on the stack, its servers'), and the CPU of the run
    and its workers (trials, refits, hand-offs) per trial finished there."""
    window = run.cpu["window"]
    spent = {kind: cpu for kind, cpu in sorted(run.cpu.items(), key=lambda kv: -kv[1]) if kind != "window"}
    # confined to one core, the run leaves the others to this benchmark's sampler
    rest = run.cores * window - sum(cpu for kind, cpu in spent.items() if run.cores > 1 or kind != "sampler")
    per_trial = (spent.get("run", 0.0) + spent.get("worker", 0.0)) / (run.rate * window) * 1000
    return f"{window:.2f} s x {run.cores} cores: " + ", ".join(f"{kind} {cpu:.2f}" for kind, cpu in spent.items()
                                                         if cpu >= 0.005) + \
        f", the rest {rest:.2f} CPU s; the run and its workers {per_trial:.0f} ms of CPU a trial"


def charged_rate(two: Run, one: Run) -> float:
    """Two workers' trials/s, had their window held as much of the writer's and the publisher's CPU as one
    worker's did. Their work is mostly once a run (imports, three publications): in two workers' shorter
    window less of it falls, the rest after their last trial. Spread over the two cores, the difference
    lengthens the window by half of it."""
    def helpers(run: Run) -> float:
        return run.cpu.get("writer", 0.0) + run.cpu.get(PUBLISHER, 0.0)

    window = two.cpu["window"]
    return two.rate * window / (window + max(0.0, helpers(one) - helpers(two)) / two.cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline-commit", default="92b11bd", help="the release before workers (issue 12)")
    parser.add_argument("--profile", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)  # in the child process
    parser.add_argument("--compute-only", nargs=1, help=argparse.SUPPRESS)  # in the child process
    args = parser.parse_args()
    if args.profile:
        profile(args.profile)
        return
    if args.compute_only:
        compute_only(args.compute_only)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)  # the stack's PostgreSQL runs as its own user when we are root
        reviews = generate(args.rows, tmp_path)
        before = baseline_checkout(args.baseline_commit, tmp_path / "before")
        print(f"{args.rows} generated reviews; {FAMILIES} families x {TRIALS} trials, 5 folds; starting the stack ...",
              flush=True)
        stack = up(tmp_path / "stack", "127.0.0.1", dict(zip(DEFAULT_PORTS, (55990, 55991, 55992), strict=True)))
        stack_env = {k: v for k, v in stack.environment().items()
                     if k in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE", LOCK_URL_ENV, TRACKING_DB_ENV)}
        configurations: dict[str, Callable[[], Run]] = {
            f"release {args.baseline_commit}, 1 process": lambda: tuning_run(before, reviews, {}),
        }
        stores = {"journal": {}, "SQLite": {"OPTUNA_STORAGE": "sqlite:///optuna.db"}, "stack": stack_env}
        for where, env in stores.items():
            configurations |= {
                f"1 worker, {where}": functools.partial(tuning_run, PROJECT, reviews, env),
                f"2 workers, {where}": functools.partial(tuning_run, PROJECT, reviews, env, "--workers", "2"),
                f"1 worker pinned, {where}": functools.partial(tuning_run, PROJECT, reviews, env, "--n-jobs", "1",
                                                               pin_workers=0),
                f"1 worker confined, {where}": functools.partial(tuning_run, PROJECT, reviews, env, "--n-jobs", "1",
                                                                 pin_workers=0, confined=True),
                f"2 workers pinned, {where}": functools.partial(tuning_run, PROJECT, reviews, env, "--workers", "2",
                                                                "--n-jobs", "1", pin_workers=1),
            }
        results: dict[str, list[Run]] = {name: [] for name in configurations}
        ceilings: list[tuple[float, float]] = []
        try:
            for round_ in range(args.rounds):
                for name, measure in configurations.items():
                    results[name].append(run := measure())
                    print(f"round {round_ + 1}: {name:<34} {run.seconds:6.1f} s  {run.rate:5.2f} trials/s"
                          + (f"  {window_cpu(run)}" if "pinned" in name or "confined" in name else ""),
                          flush=True)
                ceilings.append(compute_ceiling(reviews))
                print(f"round {round_ + 1}: the trials' compute alone, 1 copy / 2 copies on 2 cores: "
                      f"{ceilings[-1][0]:.2f} / {ceilings[-1][1]:.2f} trials/s", flush=True)
            per_trial = {where: storage_ms_per_trial(reviews, env) for where, env in stores.items()}
            log_sqlite = logging_ms(f"sqlite:///{tmp_path / 'logging.db'}")
            log_stack = logging_ms(stack_env["MLFLOW_TRACKING_URI"])
            log_stack_database = logging_ms(stack_env["MLFLOW_TRACKING_URI"], stack_env[TRACKING_DB_ENV])
        finally:
            down(tmp_path / "stack")
            subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(before)],
                           capture_output=True)
    best = {name: (min(r.seconds for r in rows), max(r.rate for r in rows)) for name, rows in results.items()}
    base_s = best[f"release {args.baseline_commit}, 1 process"][0]
    print(f"\nbest of {args.rounds} rounds              wall s   x release   trials/s")
    for name, (seconds, rate) in best.items():
        print(f"{name:<36} {seconds:6.1f}   {seconds / base_s:8.2f}   {rate:8.2f}")
    for where, goal in (("journal", 1.8), ("SQLite", 1.8), ("stack", 1.7)):
        fastest = {workers: max(results[f"{workers}, {where}"], key=lambda r: r.rate)
                   for workers in ("1 worker pinned", "1 worker confined", "2 workers pinned")}
        one, confined, two = fastest.values()
        print(f"pinned, 2 workers / 1, {where} (goal >= {goal}x): {two.rate / confined.rate:.2f}x one worker "
              f"confined to one core ({charged_rate(two, confined) / confined.rate:.2f}x charged with its writer's "
              f"and publisher's CPU); {two.rate / one.rate:.2f}x one worker whose writer and publisher have the "
              f"second core; with defaults, the whole run "
              f"{best[f'2 workers, {where}'][0] / best[f'1 worker, {where}'][0]:.2f}x as long (goal <= 1)")
        print("  in their trials' window (the fastest of each): " + "; ".join(
            f"{workers}: {window_cpu(run)}" for workers, run in fastest.items()))
    one, two = max(one for one, _ in ceilings), max(two for _, two in ceilings)
    print(f"the ceiling: the trials' compute alone (no storage, tracking, writer or publisher) scales {two / one:.2f}x "
          f"from 1 copy on 1 core to 2 on 2 ({one:.2f} / {two:.2f} trials/s, best of {args.rounds})")
    for (where, goal), (ms, beside, by_call) in zip((("journal", 10), ("SQLite", 10), ("stack", 25)),
                                                    per_trial.values(), strict=True):
        print(f"storage + tracking per trial, {where}: {ms:.1f} ms on the trials' path (goal <= {goal}) and "
              f"{beside:.1f} ms beside it; most: " + ", ".join(f"{call} {ms:.1f}" for call, ms in by_call.items()))
    print(f"logging one trial's child run: {log_stack:.1f} ms through the MLflow server, {log_stack_database:.1f} ms "
          f"into its database ({TRACKING_DB_ENV}, as on the stack), {log_sqlite:.1f} ms on SQLite")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    main()
