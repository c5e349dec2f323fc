"""Which process is which, across restarts: a pid together with the process's start mark, so a pid
the system reused is not taken for the process that held it before.

The mark is the start in seconds since boot, the kernel's own count, with the boot's id: psutil's start
time adds the boot time, which moves with the wall clock, so a clock stepped by more than a second (an
NTP step, a VM resumed) made a live process look gone (a fault probe: `stack.py down` then forgot both
servers and left them running; a live run could be marked KILLED). Marks made before are start times
since the epoch: they are still compared that way.

Also what the stages share about processes: starting, health-checking and stopping server processes,
a file lock that processes on one machine take turns on, the cycle collector paused while a process
imports its libraries, Ctrl-C: held while a failed run takes back what it wrote, and the traceback
SQLAlchemy logs for a fetch it cut short left out; a command's own folder of temporary files; and pools
of processes forked with what they work on.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

SAME_START_SECONDS = 1.0  # two readings of one start may differ by a fraction of a second
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # Linux: a new id at each boot
TEMPORARY_PREFIX = "review-sentiment-"  # a command's folder of temporary files: TMPDIR/review-sentiment-*
_IN_USE = ".in-use"  # in that folder: a shared flock on it while its command, or a process it started, runs
INTERRUPTED = 130  # the exit status after Ctrl-C, as a shell reports a process SIGINT ended (128 + 2)
_PACKAGE = Path(__file__).resolve().parent  # review_sentiment/, beside the entry scripts
_kept: list[Any] = []  # in a process of a `forked_pool`: what it was forked with


def this_process() -> tuple[int, str]:
    me = psutil.Process()
    return me.pid, start_mark(me)


def start_mark(process: psutil.Process) -> str:
    """`SECONDS@BOOT_ID`: when the process started, in seconds since boot, and which boot (the count
    starts again at each). Where the system names no boot (not Linux), its start time since the epoch."""
    if (boot := _boot_id()) is None:
        return f"{process.create_time():.3f}"
    # read afresh: a psutil object keeps the start time it read first, which a step since has moved (gone
    # already, it keeps its own: nothing will find it running)
    with contextlib.suppress(psutil.NoSuchProcess):
        process = psutil.Process(process.pid)
    return f"{_since_boot(process):.3f}@{boot}"


def _since_boot(process: psutil.Process) -> float:
    """Its start in seconds since boot: psutil's start time less the boot time it added, read together."""
    return process.create_time() - psutil.boot_time()


@functools.cache
def _boot_id() -> str | None:
    """Linux's id of this boot (a new one at each); None where the system names none."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


def running(pid: int, started: str | float) -> psutil.Process | None:
    """The process with this pid and start mark (`start_mark`, or a start time since the epoch: a mark made
    before) if it still runs (a zombie does not); else None."""
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE and _same_start(process, str(started)):
            return process
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        return psutil.Process(pid)  # someone else's process by that pid and start: alive, not ours to judge
    return None


def _same_start(process: psutil.Process, started: str) -> bool:
    """`process` (just read: its start is not stale) started as the mark says."""
    seconds, _, boot = started.partition("@")
    if not boot:
        return abs(process.create_time() - float(seconds)) < SAME_START_SECONDS
    return _boot_id() == boot and abs(_since_boot(process) - float(seconds)) < SAME_START_SECONDS


class _CursorCutByCtrlC(logging.Filter):
    """SQLAlchemy's "Error closing cursor", with its traceback, where Ctrl-C cut a fetch short: SQLAlchemy
    closes (invalidates) a connection an interrupt cut into, then fails to close its cursor. Nothing is
    lost there; the command reports the Ctrl-C in its one line (a fault probe saw the traceback in 1 of
    4 Ctrl-Cs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (record.msg == "Error closing cursor" and isinstance(getattr(error, "__context__", None),
                                                                         KeyboardInterrupt))


def quiet_cursors_cut_by_ctrl_c() -> None:
    """Drop that record, on the loggers of SQLAlchemy's pools (its pools log through their class's logger)."""
    for pool in ("QueuePool", "NullPool", "SingletonThreadPool", "StaticPool"):
        logger = logging.getLogger(f"sqlalchemy.pool.impl.{pool}")
        if not any(isinstance(f, _CursorCutByCtrlC) for f in logger.filters):
            logger.addFilter(_CursorCutByCtrlC())


def ended(process: psutil.Process) -> bool:
    """Gone (its pid free or another's), or a zombie until its parent (init, for an orphan) reaps it:
    either way it runs no more."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start_detached(command: list[str], env: dict[str, str], log: Path) -> psutil.Process:
    """A server process in a session of its own (Ctrl-C in the terminal does not reach it; stopping its
    group stops its children), its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return psutil.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(url: str, process: psutil.Process, name: str, log: Path, timeout: float) -> None:
    """Return once GET `url` answers 200; RuntimeError naming the log if the process dies or stalls."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ended(process):
            raise RuntimeError(f"{name} exited; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{name} not healthy after {timeout:.0f}s; see {log}")


def stop_group(process: psutil.Process, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
    """`sig` to the process group it leads, SIGKILL after `timeout` seconds; then wait for the leader
    and for every member that is left (nothing of it keeps running)."""
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    stop_members(process.pid, members, sig, timeout)


def leaderless_group(leader: int) -> list[psutil.Process]:
    """What is left of the process group `leader` led, once it is gone (killed, its children run on). The
    group's id is the leader's pid, which the system gives no new process while the group has members:
    found with no process by that pid (or only the leader's zombie), they are that group's."""
    with contextlib.suppress(psutil.NoSuchProcess):
        if psutil.Process(leader).status() != psutil.STATUS_ZOMBIE:  # a zombie: the leader, dead, not reaped yet
            return []  # the leader, or another process by its pid: not a group left without its leader
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):  # gone meanwhile
            if os.getpgid(process.pid) == leader and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
    return members


def stop_members(group: int, members: list[psutil.Process], sig: signal.Signals, timeout: float = 15.0) -> None:
    """`sig` to the process group `group`, SIGKILL after `timeout` seconds; then wait for `members`, its
    processes (a group whose leader is gone: `leaderless_group`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)
    _, alive = psutil.wait_procs(members, timeout=timeout)
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        for member in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(alive, timeout=5)


def name_this_process(name: str) -> None:
    """Name a forked process in ps and top (Linux's /proc/PID/comm; nothing elsewhere): forked, it shows
    the command line of the process it was forked from."""
    with contextlib.suppress(OSError):
        Path("/proc/self/comm").write_text(name[:15])  # the kernel keeps 15 bytes


@contextmanager
def interrupts_held(doing: str) -> Iterator[None]:
    """Ctrl-C does not interrupt the block (in the main thread; elsewhere it cannot be reached): it says
    so, once, and the block goes on; a third one goes through. For taking back what a failed run wrote,
    which a second Ctrl-C cut half-way (a fault probe: 2-3 of 5 runs left active beside deleted ones, in
    3 of 4 double Ctrl-Cs 0.05-0.1 s apart). The failure being handled is raised after it anyway."""
    if threading.current_thread() is not threading.main_thread() or isinstance(signal.getsignal(signal.SIGINT),
                                                                               _Held):
        yield  # not ours to hold, or held already by a block around this one
        return
    before = signal.signal(signal.SIGINT, _Held(doing))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if before is None else before)  # None: set outside Python


class _Held:
    """SIGINT's handler while `interrupts_held` holds it: a third Ctrl-C goes through (the block may wait
    minutes on an unreachable server: MLflow retries each call)."""

    def __init__(self, doing: str) -> None:
        self.doing, self.came = doing, 0

    def __call__(self, number: int, frame: object) -> None:
        self.came += 1
        if self.came == 1:
            with contextlib.suppress(OSError, ValueError):  # a closed stderr must not stop the block
                print(f"{self.doing}: Ctrl-C waits until that is done (twice more: stop now, leaving it half-done)",
                      file=sys.stderr, flush=True)
        elif self.came >= 3:
            raise KeyboardInterrupt


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused while the block runs; in a program of ours, everything alive at its
    end is then kept out of later collections (`gc.freeze`). For a block that imports a library stack or
    loads data: it makes hundreds of thousands of objects that live as long as the process and few cycles,
    which the collector walks again and again as they pile up, then at every full collection until the
    process ends. Importing the tuning pipeline took 2.7 s instead of 3.2 s; a tuning run of the sample
    began its first trial 0.5 s sooner and ended 0.75 s sooner (medians of 5, paired).

    A frozen object is never collected as part of a cycle, even one it joins later, and the freeze takes
    the whole process as it is. So it is done only where the process runs one of our programs to its end
    (an entry script, the tuning command's writer); where a notebook or the tests call in, the block only
    pauses the collector."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _our_program():
            gc.freeze()
        if enabled:
            gc.enable()


def _our_program() -> bool:
    """Whether this process's program (`__main__`) is an entry script of this project or a module of its
    package (the writer), not a caller's: a notebook, pytest, `python -c`."""
    program = getattr(sys.modules.get("__main__"), "__file__", None)
    if program is None:
        return False
    path = Path(program).resolve()
    return path.parent == _PACKAGE.parent or _PACKAGE in path.parents


@contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` for the block: processes on this machine take turns, and the
    kernel releases it if its holder dies (no stale locks)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def own_temporary_folder() -> Iterator[Path]:
    """The command's temporary files (MLflow's folders of the artifacts it logs, say) in a folder of its own
    under TMPDIR, removed as it ends; a later command removes one a kill -9 left (SIGKILL cleans nothing
    up: a fault probe found MLflow's folder of an artifact being logged left in 1 of 11 kills), as it
    starts and as it ends, once no process of the killed command still runs.
    Whether a folder is still in use is told by a shared `flock` on its `.in-use` file, which the kernel
    drops once no process holds it: the command holds it, the processes it forks inherit it (a publisher,
    worker or fold process outliving a kill keeps the folder), and one it starts afresh takes it
    (`hold_temporary_folder`). No pid, host or clock is read, so a reused pid, a stepped clock or another
    machine sharing TMPDIR cannot make a folder in use look abandoned. The folder is made under a hidden
    name, locked, then renamed into place: a sweep never sees it unlocked. Processes it starts afresh (the
    writer) keep TMPDIR: only `tempfile.tempdir` changes."""
    base = Path(tempfile.gettempdir())
    _remove_abandoned(base)
    made = Path(tempfile.mkdtemp(prefix=f".{TEMPORARY_PREFIX}", dir=base))
    in_use = os.open(made / _IN_USE, os.O_CREAT | os.O_RDONLY | os.O_CLOEXEC, 0o600)  # exec'd programs drop it
    try:
        fcntl.flock(in_use, fcntl.LOCK_SH)
        folder = made.rename(base / made.name.removeprefix("."))
        tempfile.tempdir = str(folder)
        try:
            yield folder
        finally:
            tempfile.tempdir = str(base)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(made, ignore_errors=True)  # not renamed (interrupted): still hidden
        os.close(in_use)
        _remove_abandoned(base)  # a killed command's processes may have outlived this one's start


def hold_temporary_folder(folder: Path) -> None:
    """Keep the command's temporary folder in use while this process runs (one the command started afresh,
    which inherits no descriptor of it): a shared `flock` the kernel drops as this process ends. No-op where
    `folder` is not such a folder, or is gone already (its command was killed meanwhile)."""
    with contextlib.suppress(OSError):
        fcntl.flock(os.open(folder / _IN_USE, os.O_RDONLY | os.O_CLOEXEC), fcntl.LOCK_SH)  # kept open: held


def _remove_abandoned(base: Path) -> None:
    """Remove this user's temporary folders in `base` that no process holds (`own_temporary_folder`); and
    hidden ones a minute old, whose command was killed before it renamed them."""
    hidden_before = time.time() - 60
    for folder in [*base.glob(f"{TEMPORARY_PREFIX}*"), *base.glob(f".{TEMPORARY_PREFIX}*")]:
        try:
            made = os.lstat(folder)
            if (not stat.S_ISDIR(made.st_mode) or made.st_uid != os.getuid()
                    or (folder.name.startswith(".") and made.st_mtime > hidden_before)):
                continue  # not a folder of this user's (a link, say), or maybe still being made
            # non-blocking: opening a FIFO someone put there would wait for a writer
            in_use = os.open(folder / _IN_USE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # not such a folder, or removed meanwhile
            continue
        try:
            held = os.fstat(in_use)
            if stat.S_ISREG(held.st_mode) and held.st_uid == os.getuid():
                fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while any process holds it
                _remove_hold_file_last(folder)
        except OSError:
            pass  # in use
        finally:
            os.close(in_use)


def _remove_hold_file_last(folder: Path) -> None:
    """Remove the folder, its `.in-use` file last: killed meanwhile, a sweep still recognises what is left."""
    for item in folder.iterdir():
        if item.name != _IN_USE:
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)
    (folder / _IN_USE).unlink(missing_ok=True)
    folder.rmdir()


def forked_pool(processes: int, keep: object) -> ProcessPoolExecutor:
    """A pool of `processes` processes forked now with `keep` (read with `kept()`: never pickled, shared
    copy-on-write; a page a process writes to is copied, a Python object's reference count included).
    Each ignores Ctrl-C (the parent's to handle: it ends the pool), never runs the cycle collector over
    what it was forked with (which would write to every page of the parent's objects it walks), and exits
    once the parent is gone: an executor's process outlives a parent killed with SIGKILL, waiting for work
    forever. An executor rather than `multiprocessing.Pool`: a killed Pool process leaves its task waiting
    forever; the executor reports it (BrokenProcessPool, also from here where one dies as they start)."""
    from concurrent.futures import ProcessPoolExecutor  # here: every command imports this module

    pool = ProcessPoolExecutor(processes, multiprocessing.get_context("fork"), _keep, (keep, os.getpid()))
    try:
        list(pool.map(_ready, range(processes)))  # forked now, not later inside the parent's work
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    return pool


def kept() -> Any:
    """In a process of a `forked_pool`: what it was forked with."""
    return _kept[0]


def _keep(keep: object, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    gc.freeze()
    _kept.append(keep)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _ready(_: int) -> None:
    """Nothing: makes the executor fork its processes when it is created."""
