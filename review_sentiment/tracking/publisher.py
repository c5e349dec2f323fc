"""A tuning command's models published (`publication.publish`: figures, model, version) by a process of
their own, one after another in the order handed over, while the next family's trials run.

Forked from the command once it has imported the pipeline and named its store, the publisher has sklearn,
MLflow and the cleaning imported already. The writer process that published before (`trial_writer`,
started ahead of the command's imports so that its own overlap them) imported them a second time: ~2 s of
CPU, much of it beside the first trials, where two workers had no core to spare. What only publishing
needs (matplotlib, skops: `import_ahead`, ~1 s) it imports while the first family's trials run. Above
`FORK_AT_MOST_REVIEWS` the publisher is a fresh process instead (it imports everything, seconds in a run of
minutes): forked, it kept every page of the command's reviews it shared alive while the command, touching
its strings' reference counts, copied them (1M reviews: 3.39 GiB peak against 2.58).

A model goes over in a nameless file, whose descriptor travels with a message on a Unix socket (a model is
larger than a message; nothing is left behind whoever is killed). Each answer is the version's number, or
None where publishing failed (its traceback on stderr); where it is None or never comes (the publisher
killed), the command looks for the version by the model's fingerprint and else publishes the model itself
(`release.release_by`). Once the command is gone (kill -9) the publisher starts no publication and ends
after the one under way. Ctrl-C reaches the terminal's whole process group: the publisher ignores it and
publishes what it was handed, which the failed command waits for before taking back what it wrote.

Each publication stages its files (MLflow's temporary folders) in a folder of its own, which the command
names: the publisher removes it after each publication, and the command after the publisher ends, so a
publisher killed mid-publication (kill -9, or a second Ctrl-C) leaves nothing in TMPDIR either.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import multiprocessing
import os
import pickle
import secrets
import select
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from multiprocessing import resource_tracker
from pathlib import Path
from typing import TYPE_CHECKING

from review_sentiment.processes import hold_temporary_folder, name_this_process

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from review_sentiment.tracking.publication import Publication

NAME = "publisher"  # its name in ps and top
FORK_AT_MOST_REVIEWS = 100_000  # usable reviews the command holds: 100,000 cost a forked publisher 0.07 GiB
_PUBLISH, _SYNC, _END = b"publish", b"sync", b"end"  # the command's messages
_FAILED, _SYNCED = b"-", b"synced"  # the publisher's answers, besides a version's number
_PARENT_CHECK_SECONDS = 1.0  # how often an idle publisher looks whether the command that started it still runs


class PublisherProcess:
    """The command's handle on its publisher process (started when this is made: forked, or afresh)."""

    def __init__(self, tracking_uri: str, forked: bool) -> None:
        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.staging = Path(tempfile.gettempdir()) / f"{NAME}-{os.getpid()}-{secrets.token_hex(4)}"
        self._sent = 0
        self._numbers: list[str | None] = []  # the answers so far, in the order the models were handed over
        self._gone = False  # it ended (killed): no answer comes any more
        self._unsure = False  # a model was being sent when an interrupt came: whether it went is unknown
        started = multiprocessing.get_context("fork") if forked else multiprocessing.get_context("spawn")
        if not forked:  # spawning starts multiprocessing's resource tracker first, unblocking SIGINT as it does
            resource_tracker.ensure_running()
        self._process = started.Process(target=_serve, name=NAME,
                                        args=(theirs, self._socket, os.getpid(), tracking_uri, self.staging))
        # Ctrl-C before it ignores it (its first ~10-90 ms) would print its traceback: blocked until then
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._process.start()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            theirs.close()
            self._socket.close()
            raise
        theirs.close()  # then the publisher's end is its only one: its death is an end of file here
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a Ctrl-C that came meanwhile is raised here
        except BaseException:  # and the command would not know of the publisher it started: stopped
            self.stop()
            self._socket.close()
            raise

    def publish(self, publication: Publication) -> Callable[[], ModelVersion | None]:
        """Hand the model over: gives what returns its version once published, or None where it was not."""
        try:
            with tempfile.TemporaryFile() as file:  # nameless: nothing is left behind, whoever is killed
                pickle.dump(publication, file, protocol=pickle.HIGHEST_PROTOCOL)
                file.flush()
                self._unsure = True  # until it is counted: interrupted meanwhile, `drain` asks
                socket.send_fds(self._socket, [_PUBLISH], [file.fileno()])  # the publisher gets its own descriptor
        except Exception:  # noqa: BLE001  no room for it, say, or the publisher is gone: the command publishes it
            self._unsure = False
            return lambda: None
        index, self._sent, self._unsure = self._sent, self._sent + 1, False

        @functools.cache
        def version() -> ModelVersion | None:
            while len(self._numbers) <= index and self._read() is not None:
                pass
            if index >= len(self._numbers) or (number := self._numbers[index]) is None:
                return None
            import mlflow

            return mlflow.MlflowClient().get_model_version(publication.name, number)

        return version

    def publishing(self) -> bool:
        """Whether a model handed over is not answered yet (the answers arrived meanwhile are read)."""
        while len(self._numbers) < self._sent and not self._gone and select.select([self._socket], [], [], 0)[0]:
            self._read()
        return len(self._numbers) < self._sent and not self._gone

    def drain(self) -> None:
        """Returns once every model sent is answered, or the publisher is gone. Where a model was being sent
        as an interrupt came, it asks: the publisher answers in order, so once it answers that question,
        every model it got is answered."""
        if self._gone or not (self._unsure or len(self._numbers) < self._sent):
            return  # nothing to wait for (its start-up imports included)
        with contextlib.suppress(OSError):  # gone: the answers it gave before that are still read
            self._socket.send(_SYNC)
        while self._read() not in (_SYNCED, None):
            pass

    def stop(self) -> None:
        """Kill it at once, and remove what it was staging: a failed run interrupted again while it waits
        (a second Ctrl-C) takes back what it wrote next, and a version registered after that would outlive
        it. (Stopped any gentler, it could finish a publication meanwhile.)"""
        self._process.kill()
        self._ended()

    def close(self) -> None:
        """Publish what was handed over, then end."""
        with contextlib.suppress(OSError):  # gone
            self._socket.send(_END)
        self._ended()
        self._socket.close()

    def _ended(self) -> None:
        """Wait for it to end, then remove what it left staging (killed mid-publication)."""
        self._process.join()
        shutil.rmtree(self.staging, ignore_errors=True)
        self._gone = True

    def _read(self) -> bytes | None:
        """Read the next answer (a publication's is kept); None once the publisher is gone."""
        if not self._gone:
            try:
                answer = self._socket.recv(64)
            except ConnectionResetError:  # killed with a message of ours unread
                answer = b""
            if answer:
                if answer != _SYNCED:
                    self._numbers.append(None if answer == _FAILED else answer.decode())
                return answer
            self._gone = True
        return None


def _serve(jobs: socket.socket, commands_end: socket.socket, command: int, tracking_uri: str,
           staging: Path) -> None:
    """The publisher: import what publishing needs, then publish each model handed over, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's to handle
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked since it was started: one pending is dropped
    hold_temporary_folder(staging.parent)  # started afresh, it inherited no hold on the command's folder
    commands_end.close()  # forked, it has the command's end too
    gc.freeze()  # forked, what it was forked with is never collected here: the collector would write to (and
    # so copy) every page of the command's objects it walks, the reviews among them
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: it ends once the command has
    # stopped with the command's whole process group: a publication under way cleans up its temporary files
    signal.signal(signal.SIGTERM, lambda number, _: sys.exit(128 + number))
    name_this_process(NAME)
    import mlflow

    from review_sentiment.databases import sqlite_without_fsync_per_commit
    from review_sentiment.tracking.publication import import_ahead

    mlflow.set_tracking_uri(tracking_uri)  # the command's, however it chose it

    try:
        import_ahead()
    except Exception:  # noqa: BLE001  a publication then imports what it needs (and answers if it fails)
        traceback.print_exc()
    # its connections to an SQLite store are closed as it ends: the last process to close one removes the
    # store's -wal and -shm files
    with sqlite_without_fsync_per_commit(tracking_uri):
        while os.getppid() == command:
            if not select.select([jobs], [], [], _PARENT_CHECK_SECONDS)[0]:
                continue
            message, descriptors, _, _ = socket.recv_fds(jobs, 64, 1)
            if message not in (_PUBLISH, _SYNC) or os.getppid() != command:  # told to end, or the command is gone
                return
            if message == _SYNC:
                answer = _SYNCED
            else:
                answer = _FAILED if (number := _published(descriptors[0], staging)) is None else number.encode()
            try:
                jobs.send(answer)
            except OSError:  # the command is gone: nobody reads
                return


def _published(descriptor: int, staging: Path) -> str | None:
    """The published version's number; None where publishing failed (the command then publishes it).
    Its temporary files are made in `staging`, removed once it is done."""
    import mlflow

    from review_sentiment.tracking.publication import publish

    others = tempfile.tempdir
    try:
        staging.mkdir(exist_ok=True)
        tempfile.tempdir = str(staging)
        with os.fdopen(descriptor, "rb") as file:
            file.seek(0)  # the command's writing left the shared offset at the end
            publication: Publication = pickle.load(file)  # noqa: S301  written by the command that forked this process
        # the logged model goes into the active experiment, which is the run's only where a run is active
        mlflow.set_experiment(experiment_id=mlflow.MlflowClient().get_run(publication.run_id).info.experiment_id)
        return str(publish(publication).version)
    except Exception:  # noqa: BLE001  the command publishes it itself, failing there if the store still fails
        traceback.print_exc()
        return None
    finally:
        tempfile.tempdir = others
        shutil.rmtree(staging, ignore_errors=True)
