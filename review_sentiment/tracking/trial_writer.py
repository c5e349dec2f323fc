"""The child runs of a tuning command's trials, written by a process of its own, on another core.

Writing a finished trial as a child run (`trial_runs`) was ~18 ms of SQLAlchemy work a trial on SQLite
through MLflow's calls. On a thread beside the trials it held the interpreter lock they needed: with it out
of the process, a tuning run of the published pipeline's reviews took 1.1-1.6 s less (of ~9.5 s), measured.
(It is now ~4 ms, ~1 ms in the batches this process gathers, for up to 0.25 s after a batch's first.) The
writer starts before the reviews are read and the pipeline imported, so that its own imports overlap
the command's; and where the tracking store will be a new SQLite file it makes it meanwhile, under a
name of its own, linked into place once the command names that store (a run that fails before leaves none).
A process that has imported MLflow already (a notebook, the tests) has no imports of its own for the
writer's (~2 s of CPU) to hide behind: it writes them on a thread, as before, and publishes its models
itself (`trial_writer`).

The command and the workers it forks send it messages on one Unix `SOCK_SEQPACKET` socket: each send is
one whole message, so processes need no lock to share it, and one killed mid-send cannot leave half a
message. Only the command reads the writer's answers (its stdout): "ready" once the store exists,
"flushed" once every message sent before a flush is written. Ctrl-C stops the command, not the writer: it
writes what it was sent, then ends when told. Once the command is gone (kill -9) it ends after the step it
is in (at most its imports, ~1.5 s), writing nothing more.
A write that fails ends the writer (its traceback on stderr): the trials it did not write are gaps, which
the command fills itself once every family's trials are done (`log_missing_trial_runs`), failing there if
the store does. Either writer, a failed write costs gaps, never the trials.

The command's models are published beside the next family's trials by another process, started once the
command names its store (`publisher`: forked from it, or afresh for a large file); the writer's handle is
the command's way to it.
"""
from __future__ import annotations

import contextlib
import errno
import importlib
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from review_sentiment.constants import PROJECT_DIR  # where `review_sentiment` is imported from
from review_sentiment.processes import collector_paused

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from optuna.trial import FrozenTrial

    from review_sentiment.tracking.publication import Publication
    from review_sentiment.tracking.publisher import PublisherProcess
    from review_sentiment.tracking.trial_runs import ChildRunStore

READY, FLUSHED = b"ready\n", b"flushed\n"
_LARGEST = 1 << 18  # bytes: above the socket's send buffer (~208 KB here), which bounds a message (a trial's
# is ~2 KB; a larger one than the buffer is not sent: a gap, filled later)
_BATCH = 64  # child runs written in one transaction at most
# How long a batch waits for the trials that end after its first: a child run costs ~4 ms of CPU alone,
# ~1 ms in eights (SQLite), and two workers' trials of 8,500 reviews end ~25 ms apart on 2 cores, where the
# writer's CPU is taken from theirs. A run shows up in MLflow that much later; a flush ends the wait.
_GATHER_SECONDS = 0.25
_PARENT_CHECK_SECONDS = 1.0  # how often an idle writer looks whether the command that started it still runs


@dataclass(frozen=True)
class _OpenStore:
    tracking_uri: str


@dataclass(frozen=True)
class _TrialRun:
    experiment_id: str
    parent_run_id: str
    trial: FrozenTrial
    direction: str


@dataclass(frozen=True)
class _Flush:
    pass


@dataclass(frozen=True)
class _End:
    pass


class TrialWriter(Protocol):
    """Where a tuning command and the workers it forks send their finished trials' child runs."""

    def open_store(self, tracking_uri: str, reviews: int = 0) -> None:
        """The store to write them to, named by the command once, as it is about to use it (never by a forked
        worker): the command then opens (or makes) it, unless the writer made it ahead. `reviews`: how many
        the command holds (its publisher is forked up to `publisher.FORK_AT_MOST_REVIEWS`)."""

    def write(self, experiment_id: str, parent_run_id: str, trial: FrozenTrial, direction: str) -> None:
        """Queue the trial's child run: the trials go on (a failed write leaves a gap, filled later)."""

    def flush(self) -> None:
        """Returns once every child run this process and its (finished) workers sent is written, or the
        writing has stopped (the rest are gaps), and every model handed over is answered. Only the command's
        own process calls it."""

    def publish(self, publication: Publication) -> Callable[[], ModelVersion | None]:
        """Have the model published (only the command's own process): gives what returns its version once
        published, or None where it was not (the command then publishes it itself)."""

    def publishing(self) -> bool:
        """Whether a model handed over is not published yet (its answer not come): a command that has
        none outstanding can look up every version it handed over without waiting."""


@contextlib.contextmanager
def trial_writer(publishes: bool = False) -> Iterator[TrialWriter]:
    """A writer process (`writer_process`), or a thread where MLflow is imported already (`writer_thread`).
    `publishes`: the command will have models published (by a process started once it names its store)."""
    with writer_thread() if "mlflow" in sys.modules else writer_process(publishes) as writer:
        yield writer


class _ProcessWriter:
    """The command's handle on its writer process and its publisher; workers it forks use it too (`write` only)."""

    def __init__(self, process: subprocess.Popen[bytes], messages: socket.socket, publishes: bool) -> None:
        assert process.stdout is not None
        self._process, self._messages, self._answers = process, messages, process.stdout
        self._gone = False  # the writer ended (a failed write): nothing more is sent or awaited
        self._opened = False  # the command named its store: from then on, the writer writes all it is sent
        self._unread: list[bytes] = []  # answers due that nothing has waited for yet
        self._owner = os.getpid()  # the command; a forked worker only writes
        self._publishes = publishes
        self._publisher: PublisherProcess | None = None  # started once the store is named

    def open_store(self, tracking_uri: str, reviews: int = 0) -> None:
        """The writer's store from now on. Where it is an SQLite file not made yet, returns once the writer
        has made it (the command would else make it too); otherwise at once, the writer maybe still starting.
        Then starts the publisher, where the command publishes (`publisher`)."""
        from review_sentiment.databases import sqlite_file

        assert os.getpid() == self._owner and not self._opened, "the command names the store, once"
        new = (file := sqlite_file(tracking_uri)) is not None and not file.exists()
        self._opened = True
        self._send(_OpenStore(tracking_uri))
        self._unread.append(READY)
        if file is not None:
            # what the command needs to open it (~0.5-0.7 s of imports, while the writer makes a new one),
            # with the collector paused as for the command's other imports: an existing store is opened
            # on the first trial's path with nothing beside it
            with collector_paused():
                importlib.import_module("mlflow.store.tracking.sqlalchemy_store")
        if new:
            self._await()
        if self._publishes:
            from review_sentiment.tracking.publisher import FORK_AT_MOST_REVIEWS, PublisherProcess

            try:
                self._publisher = PublisherProcess(tracking_uri, forked=reviews <= FORK_AT_MOST_REVIEWS)
            except OSError as err:  # no memory for another process, say: the command publishes its models
                print(f"could not start the publisher process ({err}): the models are published in turn",
                      file=sys.stderr, flush=True)

    def write(self, experiment_id: str, parent_run_id: str, trial: FrozenTrial, direction: str) -> None:
        """Queue the trial's child run. Blocks only while the writer is far behind (its socket is full)."""
        self._send(_TrialRun(experiment_id, parent_run_id, trial, direction))

    def publishing(self) -> bool:
        return self._publisher is not None and self._publisher.publishing()

    def flush(self) -> None:
        """Returns once everything sent before (by this process and its workers) is written, or the writer ended,
        and every model handed over is published, or the publisher ended."""
        assert os.getpid() == self._owner, "only the command reads the writer's answers"
        try:
            self._send(_Flush())
            self._unread.append(FLUSHED)
            self._await()
            if self._publisher is not None:
                self._publisher.drain()
        except BaseException:  # a second Ctrl-C, say: the run takes back what it wrote next, so the publisher
            if self._publisher is not None:  # must not register anything after that
                self._publisher.stop()
            raise

    def publish(self, publication: Publication) -> Callable[[], ModelVersion | None]:
        assert os.getpid() == self._owner and self._opened, "the command publishes, its store named"
        return (lambda: None) if self._publisher is None else self._publisher.publish(publication)

    def _send(self, message: object) -> bool:
        """Whether the message was sent."""
        if self._gone:
            return False
        if len(data := pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)) > _LARGEST:
            return False  # more than the writer reads at once: a gap, which the command fills
        try:
            self._messages.send(data)
        except OSError as err:  # it ended (or the message is too large): the trial is a gap the command fills
            self._gone = err.errno != errno.EMSGSIZE
            return False
        return True

    def _await(self) -> None:
        """Read the answers due (they come in order; one is taken off once read whole, so that an interrupted
        read leaves it due)."""
        while self._unread and not self._gone:
            answer = self._answers.readline()
            if answer == b"":  # the writer ended
                self._gone = True
            elif answer != self._unread[0]:
                raise RuntimeError(f"the child-run writer answered {answer!r}, not {self._unread[0]!r}")
            else:
                self._unread.pop(0)

    def _end(self) -> None:
        if os.getpid() == self._owner:  # not a forked worker's copy of the handle
            if self._publisher is not None:
                self._publisher.close()
            if self._opened and not self._gone:
                self._send(_End())
            if not self._opened or self._gone:  # failed before naming its store (e.g. a refused --join), or
                self._process.terminate()  # the writer cannot be told: nothing to wait for
            self._messages.close()
            self._process.wait()
            self._answers.close()


@contextlib.contextmanager
def writer_process(publishes: bool = False) -> Iterator[TrialWriter]:
    """A writer process until the block ends; then it writes what it was sent, and ends. `publishes`: a
    publisher is forked too, once the store is named (`publisher`)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        # -P: not the working folder first on its path (a user's mlflow.py there would be imported); the
        # working folder stays the command's (MLflow's default store is relative to it)
        path = [str(PROJECT_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]  # no
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}  # empty item: that would be the working folder
        process = subprocess.Popen([sys.executable, "-P", "-m", __name__, str(os.getpid())],
                                   stdin=theirs.fileno(), stdout=subprocess.PIPE, env=env, bufsize=0)
    writer = _ProcessWriter(process, ours, publishes)
    try:
        yield writer
    finally:
        writer._end()


class _ThreadWriter:
    """Child runs written on a thread beside the trials, one at a time and at most one behind, so that one is
    written within moments of its trial's end. A forked worker has no copy of the thread: it writes its own
    before its next trial."""

    def __init__(self) -> None:
        self._uri: str | None = None
        self._store: tuple[int, ChildRunStore] | None = None  # made in the process (pid) that uses it
        self._owner = os.getpid()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="child-runs")
        self._last: Future[object] | None = None
        self._gone = False

    def open_store(self, tracking_uri: str, reviews: int = 0) -> None:
        self._uri = tracking_uri

    def publish(self, publication: Publication) -> Callable[[], ModelVersion | None]:
        """Published at once, here: a thread publishing beside the trials would hold the lock they need."""
        from review_sentiment.tracking.publication import published_now

        return published_now(publication)

    def publishing(self) -> bool:
        return False

    def write(self, experiment_id: str, parent_run_id: str, trial: FrozenTrial, direction: str) -> None:
        if os.getpid() != self._owner:
            self._written(self._log, experiment_id, parent_run_id, trial, direction)
            return
        self.flush()
        if not self._gone:
            self._last = self._thread.submit(self._log, experiment_id, parent_run_id, trial, direction)

    def flush(self) -> None:
        if self._last is not None:
            self._written(self._last.result)
            self._last = None  # once written: an interrupted wait leaves it due

    def close(self) -> None:
        self.flush()
        self._thread.shutdown()

    def _log(self, experiment_id: str, parent_run_id: str, trial: FrozenTrial, direction: str) -> None:
        from review_sentiment.tracking.trial_runs import ChildRunStore, child_run

        assert self._uri is not None, "trials are written once the store is named"
        if self._store is None or self._store[0] != os.getpid():
            self._store = os.getpid(), ChildRunStore(self._uri)
        self._store[1].write([child_run(experiment_id, parent_run_id, trial, direction)])

    def _written(self, write: Callable[..., object], *args: object) -> None:
        """Run `write`; if it fails, say so once and write no more (the rest are gaps)."""
        if self._gone:
            return
        try:
            write(*args)
        except Exception as err:  # noqa: BLE001  the run fills the gaps, failing there if the store still fails
            print(f"child runs are no longer written beside the trials ({err!r}): the run writes the rest once its "
                  f"trials are done", file=sys.stderr, flush=True)
            self._gone = True


@contextlib.contextmanager
def writer_thread() -> Iterator[TrialWriter]:
    writer = _ThreadWriter()
    try:
        yield writer
    finally:
        writer.close()


def serve(messages: socket.socket, answers: BinaryIO, command: int) -> None:
    """The writer process: write each trial it is sent as a child run, in order, until told to end."""
    import logging

    with collector_paused():  # as the command's imports: the store was made ~0.4 s sooner (a timeline, sample)
        import mlflow

        from review_sentiment.databases import sqlite_file, sqlite_without_fsync_per_commit

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its lines on making tables: the command says where
    # a database error's traceback, which MLflow logs before raising it: a failed write here is one line (`trial_runs`)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    guessed_uri = mlflow.get_tracking_uri()  # MLflow's choice with the command's environment and folder
    file = sqlite_file(guessed_uri)
    ahead = None if file is None else file.with_name(f".{file.name}.{os.getpid()}.new")  # a name of its own
    try:
        with collector_paused():  # MLflow's migrations: imports (alembic) and objects by the thousand too
            made = (file is not None and ahead is not None and os.getppid() == command  # not for a command gone
                    and _made_ahead(file, ahead, guessed_uri))
            # after: not on the store's way
            from mlflow.utils.uri import is_http_uri

            from review_sentiment.tracking.trial_runs import ChildRunStore, child_run

            # a tracking server's own database, where child runs go straight in: made while the command prepares
            early = ChildRunStore(guessed_uri) if is_http_uri(guessed_uri) else None
        opened = _received(messages, command)
        if not isinstance(opened, _OpenStore):
            return  # the command failed before tracking anything: it leaves no store behind
        if made and file is not None and ahead is not None and sqlite_file(opened.tracking_uri) == file:
            # guessed right: the store made ahead is the command's, unless one was made meanwhile (another
            # command) or the folder's file system has no hard links: then it is made as MLflow makes it
            with contextlib.suppress(OSError):
                os.link(ahead, file)
        _remove(ahead)
        with sqlite_without_fsync_per_commit(opened.tracking_uri):
            store = early if early is not None and early.tracking_uri == opened.tracking_uri else \
                ChildRunStore(opened.tracking_uri)
            _answer(answers, READY)
            for message in _in_batches(messages, command):
                if isinstance(message, list):
                    store.write([child_run(m.experiment_id, m.parent_run_id, m.trial, m.direction) for m in message])
                elif isinstance(message, _Flush):
                    _answer(answers, FLUSHED)
    finally:  # also when ended by a signal while making it
        _remove(ahead)


def _made_ahead(file: Path, ahead: Path, guessed_uri: str) -> bool:
    """Where the store the command will most likely name is a new SQLite `file`, make it now, as `ahead`.
    Made with no connection kept open on it and synced once made, not at each of its migrations' commits
    (`unsynced`: ~0.2 s of ~1 s; a file cut short is never linked): then it is whole, and can be linked
    into place."""
    import mlflow

    from review_sentiment.databases import sqlite_without_fsync_per_commit, unsynced

    if file.exists() or not file.parent.is_dir():
        return False
    _remove(ahead)  # one a writer of the same pid left, killed (pids repeat, in containers): maybe cut short
    pooled = os.environ.get("MLFLOW_SQLALCHEMYSTORE_POOLCLASS")
    os.environ["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] = "NullPool"  # MLflow's setting: each connection closed after use
    query = "".join(guessed_uri.partition("?")[1:])  # the path is decoded by SQLAlchemy: encoded here too
    uri = f"sqlite:///{urllib.parse.quote(str(ahead))}{query}"
    try:
        with sqlite_without_fsync_per_commit(uri, unsynced):
            mlflow.MlflowClient(uri).get_experiment("0")
        with ahead.open("rb") as made:
            os.fsync(made.fileno())
    except Exception:  # noqa: BLE001  a guess: what fails here fails again, with its message, for the command
        return False
    finally:
        if pooled is None:
            del os.environ["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"]
        else:
            os.environ["MLFLOW_SQLALCHEMYSTORE_POOLCLASS"] = pooled
    return True


def _remove(ahead: Path | None) -> None:
    """The store made ahead, under its own name (the store's own name stays), and its journal if cut short."""
    if ahead is not None:
        for name in (ahead, ahead.with_name(ahead.name + "-journal")):
            name.unlink(missing_ok=True)


def _received(messages: socket.socket, command: int) -> object | None:
    """The next message; None once the command is gone (killed: its workers stop too). What it sent and
    this did not write yet is left as gaps its rerun fills: written later, it would land after the next
    command has closed the runs the killed one left."""
    while os.getppid() == command:
        if select.select([messages], [], [], _PARENT_CHECK_SECONDS)[0]:
            data = messages.recv(_LARGEST)
            return pickle.loads(data) if data else None  # noqa: S301  sent by the command that started this process
    return None


def _in_batches(messages: socket.socket, command: int) -> Iterator[list[_TrialRun] | _Flush]:
    """The messages in order until the command's `_End` (or until the command is gone), the trials' child
    runs that come within `_GATHER_SECONDS` of the first in one list: written in one transaction on an SQL
    store (`write_trial_runs`), which costs a child run a quarter of the CPU in eights as alone. Any other
    message ends the list at once (a flush is answered without waiting)."""
    following: object | None = None  # read while gathering a batch, and not of it
    while True:
        message = following if following is not None else _received(messages, command)
        following = None
        if isinstance(message, _TrialRun):
            batch, until = [message], time.monotonic() + _GATHER_SECONDS
            while len(batch) < _BATCH and select.select([messages], [], [], max(0.0, until - time.monotonic()))[0]:
                if (following := _received(messages, command)) is None:
                    return  # the command is gone: the batch is gaps its rerun fills
                if not isinstance(following, _TrialRun):
                    break
                batch.append(following)
                following = None
            if os.getppid() != command:
                return  # gone while the batch waited: gaps too
            yield batch
        elif isinstance(message, _Flush):
            yield message
        else:  # told to end, or the command is gone
            return


def _answer(answers: BinaryIO, line: bytes) -> None:
    with contextlib.suppress(BrokenPipeError):  # the command is gone: nobody reads
        answers.write(line)
        answers.flush()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the command, which then ends the writer
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: it ends once the command has
    signal.signal(signal.SIGTERM, lambda number, _: sys.exit(128 + number))  # the command's terminate: cleans up
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # whatever a library prints cannot garble the answers
    try:
        # the messages are of this module's classes, not __main__'s: serve from the module they unpickle to
        module = importlib.import_module("review_sentiment.tracking.trial_writer")
        module.serve(socket.socket(fileno=sys.stdin.fileno()), answers, command=int(sys.argv[1]))
        status = 0
    except SystemExit as terminated:  # `serve` has cleaned up
        status = terminated.code if isinstance(terminated.code, int) else 1
    sys.stderr.flush()
    os._exit(status)  # all written and committed, or cleaned up: not the ~0.5 s of tearing its modules down, which
    # the command awaits
