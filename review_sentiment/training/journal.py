"""Optuna's journal storage, with heartbeats: in a file for the studies of runs on one machine, or in a
PostgreSQL table for workers on several.

A trial on Optuna's RDBStorage makes ~20 SQLAlchemy round trips: ~40 ms a trial on SQLite and ~90 ms on
the stack's PostgreSQL, measured by benchmarks/bench_workers.py. The journal appends each write as one
log and replays what the other processes appended: a few ms for the same writes. Optuna 5.1 keeps
heartbeats, how a trial whose worker died is found and queued again, to RDBStorage (optuna/optuna#6615
asks for them on the journal). `HeartbeatJournal` adds them the way RDBStorage keeps them: a trial's last
beat is recorded beside it, and a RUNNING trial whose last beat is older than the grace period is stale
(one that never beat is not); Optuna's own `fail_stale_trials` and stale-trial callback then work on it
unchanged. Beats are read off one clock that every worker shares: this machine's for a file, the database
server's for PostgreSQL (as RDBStorage, whose beats are the server's `now()`).
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import pickle
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._base import BaseJournalSnapshot
from optuna.storages.journal._file import BaseJournalFileLock, get_lock_file
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:  # imported by `study.open_storage` for a PostgreSQL URL only: psycopg takes ~70 ms
    from review_sentiment.training.postgres_journal import PostgresJournal

RETRY = "failed_trial"  # the system attribute `RetryFailedTrialCallback` gives a retry: not in the budget
HEARTBEAT = "heartbeat"  # the trial's system attribute holding its last beat (seconds since the epoch)
_CHUNK = 4096  # how far back a torn tail is looked for its line's start at a time
_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
_SAVING_SECONDS = 60  # a snapshot's temporary file older than this was left by a process killed saving it
_SNAPSHOT_AFTER_LOGS = 2000  # replayed past the snapshot (~20 ms of replay; a run of 3 x 20 trials appends ~1,000)
log = logging.getLogger(__name__)


class FileJournal(JournalFileBackend, BaseJournalSnapshot):
    """A journal file whose writes take turns on an `flock` (the kernel releases it when its holder dies:
    Optuna's own file locks stay behind a worker killed while writing, stalling the others 30 s), whose
    appends inside a running trial are not each synced to the disk, and which keeps a snapshot beside it.

    Optuna's JournalStorage rebuilds its studies by replaying every log of the file each time a process
    opens it: ~11 ms for each earlier run of 3 x 20 trials (10 runs: 112 ms), growing with every run. From
    a snapshot (`JOURNAL.snapshot`: Optuna's pickled replay state, through its snapshot interface, which
    its Redis backend implements too) it restores them in ~0.7 ms a run (10 runs: 6.5 ms) and replays only
    what was appended after it. `HeartbeatJournal` saves one where it had many logs to replay."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), lock_obj=_Flock(path))
        self.path = path
        self.snapshot_path = path.with_name(path.name + ".snapshot")

    def save_snapshot(self, snapshot: bytes) -> None:
        """Optuna 5.1 saves one at every 100th study and every 100th trial it creates: inside the trials
        (each save pickles every study), where a failed write would fail the trial. Not kept: `keep_snapshot`."""

    def keep_snapshot(self, snapshot: bytes, logs: int) -> None:
        """Keep Optuna's replay state of the file's first `logs` logs (all this process has read): made
        durable after them, with a header that ties it to this file (its first line: each names the process
        that wrote it), to the line its logs end with, and to this time zone (Optuna's replay gives local
        times); replaced at once (a process killed meanwhile leaves the old one, and a temporary file that a
        later save removes)."""
        ends = self._log_number_offset[logs]  # Optuna 5.1's file backend: each line's offset, once read
        last = self._log_number_offset[logs - 1]
        with self.path.open("rb") as file:
            os.fsync(file.fileno())  # the logs it holds outlast a power cut whenever it does
            first = file.readline()
            file.seek(last)
            ending = file.read(ends - last)
        header = {"optuna": optuna.__version__, "zone": _zone(), "logs": logs, "offset": ends,
                  "first": _digest(first), "last": _digest(ending), "last_bytes": len(ending)}
        for left in self.path.parent.glob(f".{glob.escape(self.snapshot_path.name)}.*"):
            with contextlib.suppress(OSError):  # a save under way takes well under a minute
                if time.time() - left.stat().st_mtime > _SAVING_SECONDS:
                    left.unlink()
        with tempfile.NamedTemporaryFile("wb", dir=self.path.parent, prefix=f".{self.snapshot_path.name}.",
                                         delete=False) as out:
            try:
                # readable as the journal is, writable by this user alone (`load_snapshot`)
                os.fchmod(out.fileno(), stat.S_IMODE(os.stat(self.path).st_mode) & ~_OTHERS_WRITE)
                out.write(json.dumps(header).encode() + b"\n" + snapshot)
                out.flush()
                os.fsync(out.fileno())
                os.replace(out.name, self.snapshot_path)
            except BaseException:
                Path(out.name).unlink(missing_ok=True)
                raise

    def load_snapshot(self) -> bytes | None:
        """The snapshot kept beside this very file, by this Optuna release in this time zone, whose logs the
        file still holds; None where there is none such (Optuna then replays every log). Reading resumes where
        its logs end. A pickle runs code as it loads, where the journal's JSON cannot: one that another user
        could have written is not loaded."""
        try:
            with self.snapshot_path.open("rb") as kept:
                if (mine := os.fstat(kept.fileno())).st_uid != os.getuid() or mine.st_mode & _OTHERS_WRITE:
                    return None
                header = json.loads(kept.readline())
                snapshot = kept.read()
            logs, ends, length = int(header["logs"]), int(header["offset"]), int(header["last_bytes"])
            with self.path.open("rb") as file:
                first = file.readline()
                file.seek(max(0, ends - length))
                ending = file.read(length)
            if (header["optuna"] != optuna.__version__ or header["zone"] != _zone() or logs < 1
                    or header["first"] != _digest(first) or header["last"] != _digest(ending)
                    or not ending.endswith(b"\n")):
                return None  # another release's or zone's, a journal begun anew, or one that lost its tail
        except (OSError, ValueError, TypeError, KeyError):  # not a header this release writes
            return None
        self._log_number_offset[logs] = ends  # read on from there, not from line 1
        return snapshot

    @staticmethod
    def now() -> float:
        return time.time()

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Optuna 5.1's `JournalFileBackend.append_logs` (the same bytes, under the same lock), which fsyncs
        every append, fsyncing only those `_synced` names: ~1 of a trial's ~15 appends. The others' fsyncs,
        waiting on the disk the tracking store writes to meanwhile, cost ~6 ms of storage a trial. A killed
        process loses nothing either way. A power cut can lose what running trials wrote since the last
        synced append (their budget is run again), never a finished trial (synced before its child run is
        sent), a retry queued for one, or anything of a study: an fsync makes all appended before it durable."""
        lines = "\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n"
        with get_lock_file(self._lock), open(self._file_path, "ab") as file:
            file.write(lines.encode("utf-8"))
            if any(_synced(log) for log in logs):
                file.flush()
                os.fsync(file.fileno())


def _synced(log: dict[str, Any]) -> bool:
    """Whether an append is synced to the disk: all but what a trial writes while it runs (its claim, its
    parameters, fold reports and attributes, heartbeats included); its end is, and so is a retry queued
    for a trial whose worker died (its failure is synced: the retry must be too, or the trial is lost)."""
    if log["op_code"] == JournalOperation.CREATE_TRIAL and RETRY in log.get("system_attrs", {}):
        return True
    if log["op_code"] in (JournalOperation.CREATE_TRIAL, JournalOperation.SET_TRIAL_STATE_VALUES):
        return TrialState(log.get("state", TrialState.RUNNING)).is_finished()
    return log["op_code"] not in _INSIDE_A_TRIAL


_INSIDE_A_TRIAL = frozenset({JournalOperation.SET_TRIAL_PARAM, JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE,
                             JournalOperation.SET_TRIAL_USER_ATTR, JournalOperation.SET_TRIAL_SYSTEM_ATTR})


def _digest(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _zone() -> list[object]:
    """This process's time zone, as `datetime.astimezone` reads it."""
    return [*time.tzname, time.timezone, time.altzone, time.daylight]


class JournalLost(RuntimeError):
    """Logs this process had read are gone from the database (see `postgres_journal.PostgresJournal`)."""


class HeartbeatJournal(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage on either backend, with heartbeats on the backend's clock."""

    restored_logs = 0  # how many of the journal's logs were restored from its snapshot, not replayed

    def __init__(self, backend: FileJournal | PostgresJournal, interval: int, grace: int,
                 on_stale: Callable[[optuna.Study, FrozenTrial], None] | None = None) -> None:
        super().__init__(backend)
        self.backend = backend
        self._interval, self._grace, self._on_stale = interval, grace, on_stale
        if isinstance(backend, FileJournal):
            replayed = self._replay_result.log_number_read - self.restored_logs
            # each save pickles every log's result (~1 µs a log, a tenth of replaying it): not for a few
            if replayed >= _SNAPSHOT_AFTER_LOGS and replayed * 10 >= self._replay_result.log_number_read:
                self._snapshot(backend)

    def restore_replay_result(self, snapshot: bytes) -> None:
        """Optuna's, which raises on a pickle whose classes it no longer has: the journal is then replayed."""
        try:
            super().restore_replay_result(snapshot)
        except Exception:  # noqa: BLE001  a snapshot only saves time
            log.warning("the journal's snapshot could not be restored: the journal is replayed", exc_info=True)
        self.restored_logs = self._replay_result.log_number_read

    def _snapshot(self, backend: FileJournal) -> None:
        """Save the replay state for the next process that opens the journal (`FileJournal.keep_snapshot`)."""
        with self._thread_lock:
            self._sync_with_backend()
            with contextlib.suppress(OSError):  # a read-only folder, say: the next process replays instead
                backend.keep_snapshot(pickle.dumps(self._replay_result), self._replay_result.log_number_read)

    def record_heartbeat(self, trial_id: int) -> None:
        with contextlib.suppress(UpdateFinishedTrialError):  # finished since the timer fired: it needs no beat
            self.set_trial_system_attr(trial_id, HEARTBEAT, self.backend.now())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        silent_since = self.backend.now() - self._grace
        return [trial._trial_id for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                if trial.system_attrs.get(HEARTBEAT, silent_since) < silent_since]

    def get_heartbeat_interval(self) -> int:
        return self._interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        on_stale = self._on_stale
        if on_stale is None:
            return None

        def without_the_last_beat(study: optuna.Study, trial: FrozenTrial) -> None:
            """`RetryFailedTrialCallback` copies the failed trial's system attributes into its retry: not its
            last beat, which would make the retry stale the moment it runs, before its own first beat."""
            trial.system_attrs.pop(HEARTBEAT, None)  # Optuna hands the callback a copy of the trial
            on_stale(study, trial)

        return without_the_last_beat


class _Flock(BaseJournalFileLock):
    """Optuna's journal file lock interface on an exclusive `flock` of `JOURNAL.lock`, taken by every append.
    (JournalStorage serialises a process's threads itself, so one open file at a time is enough here.)

    Holding it, no writer can be mid-line: a last line without its newline was left by a writer killed
    mid-`write` (SIGKILL can cut one where it crosses a page) and is cut, else the next line would be glued
    to it, lost, and the file unreadable from then on (no reader applied it: Optuna reads whole lines)."""

    def __init__(self, journal: Path) -> None:
        self._journal = journal
        self._path = journal.with_name(journal.name + ".lock")
        self._held: IO[str] | None = None

    def acquire(self) -> bool:
        handle = self._path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _cut_torn_tail(self._journal)
        except BaseException:
            handle.close()  # closing releases the flock too
            raise
        self._held = handle
        return True

    def release(self) -> None:
        handle, self._held = self._held, None
        assert handle is not None, "released without being acquired"
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _cut_torn_tail(journal: Path) -> None:
    with journal.open("rb+") as file:
        end = file.seek(0, os.SEEK_END)
        if end == 0:
            return
        file.seek(end - 1)
        if file.read(1) == b"\n":  # every append but one after a killed writer: its last line is whole
            return
        kept = end
        while kept > 0:
            start = max(0, kept - _CHUNK)
            file.seek(start)
            chunk = file.read(kept - start)
            if (newline := chunk.rfind(b"\n")) >= 0:
                kept = start + newline + 1
                break
            kept = start
        log.warning("%s: cut %d bytes of a line a killed writer left half written", journal, end - kept)
        file.truncate(kept)
