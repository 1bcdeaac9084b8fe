"""A worker's spooler jobs held back for a moment, to share a spool file: group commit.

A request that enqueues jobs one after the other would write a spool file per job, and a
file costs more than the job's record: ext4 searches for each new file's inode (past every
inode deleted in the last minute, on a file system without a journal), the spoolers scan,
lock, read and delete each one, and each single-job file costs them two write transactions
where a batch file's jobs take one each. So the first job a request enqueues is spooled at
once, as ever, and the ones after it wait here until ``BATCH_JOBS`` of them wait, ``LINGER``
has passed or the request ends (whichever comes first): then one file takes them all.

Each held job's id is written to the journal (``SPOOL_DIR/.outbox/RUN-PID``, an id a line)
before its record is committed (``reserve``), and the journal is emptied once the jobs in it
are spooled: it is their durable copy meanwhile, as the spool file is afterwards. A worker
killed with jobs held (a harakiri, the OOM killer) leaves it behind, and the reaper spools its
jobs (``recover``). An id whose record was never committed is skipped by its claim, and a job
spooled twice that way runs no more often than its attempts allow: its second file's claim
skips it once it has started or finished (one waiting out a retry's backoff may start its next
attempt early).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from app.jobs import owner

log = logging.getLogger(__name__)

# How long a job may wait for others to share its file: a request that goes on working after
# its enqueues holds them about this long (the outbox's thread spools them once it gets the GIL,
# within the interpreter's switch interval, 5 ms, of a request that computes).
LINGER = 0.005
# How long a file the spooler refused (a full disk) waits before it is tried again.
RETRY_AFTER = 1.0
# A job id, as ``store.new_job_id`` makes them.
JOB_ID = re.compile(r"[0-9a-f]{32}")

# Writes one spool file for these job ids; raises ``JobError`` when uWSGI refuses it.
Spool = Callable[[Sequence[str]], None]


class Outbox:
    """The jobs held back in one process (``start`` it there), and their journal."""

    def __init__(self, spool: Spool, directory: Path, batch: int, linger: float = LINGER) -> None:
        self.spool = spool
        self.directory = directory
        self.batch = batch
        self.linger = linger
        self._pid = 0

    def start(self) -> None:
        """Hold jobs in this process from now on (a uWSGI worker, after the fork and before any
        request). A journal under its name, left by a dead process with the same pid, is moved
        aside first, for the reaper: this process would have emptied it."""
        self._pid = os.getpid()
        self._ready = threading.Condition()
        self._journaled: list[str] = []  # the ids in the journal, not spooled yet
        self._pending: list[str] = []  # of those, the ones recorded: waiting for a file
        self._due_at = 0.0
        self._refused = False
        self._journal: int | None = None
        self._thread: threading.Thread | None = None
        path = self._journal_path()
        try:
            path.rename(path.with_name(f"{path.name}.{time.time_ns()}"))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("outbox journal %s of a dead process not set aside: %s", path, exc)

    def reserve(self, job_id: str) -> bool:
        """Write ``job_id`` to the journal before its record is committed, to be held once it is
        (``add``), or dropped if it is not (``release``). False when it cannot be held (not
        started here, the journal not writable, or the spooler refusing files): spool it at once."""
        if self._pid != os.getpid():
            return False
        with self._ready:
            if self._refused:
                return False
            try:
                self._append(job_id)
            except OSError as exc:
                log.warning("job %s spooled on its own: its outbox journal was not written: %s", job_id, exc)
                return False
            self._journaled.append(job_id)
            return True

    def add(self, job_id: str) -> None:
        """Hold the reserved ``job_id``, its record committed, until it can share a file."""
        with self._ready:
            self._pending.append(job_id)
            if len(self._pending) == 1:
                self._due_at = time.monotonic() + self.linger
                self._start_thread()
                self._ready.notify()
            if len(self._pending) >= self.batch or time.monotonic() >= self._due_at:
                self._flush()

    def release(self, job_id: str) -> None:
        """Forget the reserved ``job_id``, whose record was not committed (its line goes when the
        journal is next emptied; spooled meanwhile, its claim would skip it)."""
        with self._ready:
            self._journaled.remove(job_id)

    def flush(self) -> None:
        """Spool every job held back (the end of a request); never raises: what the spooler
        refuses stays, journaled, and is tried again ``RETRY_AFTER`` later."""
        if self._pid != os.getpid() or not self._pending:
            return
        with self._ready:
            if self._pending and not self._refused:
                self._flush()

    def _flush(self) -> None:
        """Spool the pending jobs in one file (about ``batch`` of them at most: ``add`` flushes
        at that, and no job is reserved while the spooler refuses, so only those other request
        threads had reserved before a refusal can join them); a refusal is logged once, and so
        is its end. The journal is emptied once nothing in it waits to be spooled."""
        try:
            self.spool(self._pending)
        except Exception as exc:
            if not self._refused:
                log.warning(
                    "%d jobs held for the spooler, which refused their file (tried again every %g s): %s",
                    len(self._pending),
                    RETRY_AFTER,
                    exc,
                )
            self._refused = True
            self._due_at = time.monotonic() + RETRY_AFTER
            self._ready.notify()
            return
        if self._refused:
            log.warning("the jobs held for the spooler are spooled now")
            self._refused = False
        spooled = set(self._pending)
        self._pending.clear()
        self._journaled = [job_id for job_id in self._journaled if job_id not in spooled]
        if not self._journaled and self._journal is not None:
            try:
                os.ftruncate(self._journal, 0)
            except OSError as exc:  # its jobs may be spooled again: they run once
                log.warning("outbox journal not emptied: %s", exc)

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._linger_forever, name="spool-outbox", daemon=True)
            self._thread.start()

    def _linger_forever(self) -> None:
        """Spool what has waited ``linger`` (or, refused, ``RETRY_AFTER``): the jobs of a request
        that goes on working after its enqueues, or that the spooler refused."""
        while True:
            try:
                with self._ready:
                    while not self._pending:
                        self._ready.wait()
                    wait = self._due_at - time.monotonic()
                    if wait > 0:
                        self._ready.wait(wait)
                        continue
                    self._flush()
            except Exception:  # this thread must outlive any bug: it is what retries a refusal
                log.exception("spool outbox: internal error, tried again in %g s", RETRY_AFTER)
                time.sleep(RETRY_AFTER)

    def _journal_path(self) -> Path:
        me = owner.here()
        return self.directory / f"{me.run}-{me.pid}"

    def _append(self, job_id: str) -> None:
        if self._journal is None:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._journal = os.open(self._journal_path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._journal, f"{job_id}\n".encode())

    def recover(self) -> int:
        """Spool the jobs in the journals of this node's dead processes (and those set aside by
        ``start``), then remove those journals; returns how many jobs were spooled. A journal
        the spooler refuses stays for the next call; never raises."""
        spooled = 0
        try:
            journals = [path for path in self.directory.iterdir() if path.is_file()]
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("outbox journals not read: %s", exc)
            return 0
        for path in journals:
            run, _, tail = path.name.rpartition("-")
            pid, _, set_aside = tail.partition(".")
            if not pid.isdigit():
                continue
            if not set_aside and owner.alive(owner.Owner(owner.node_id(), run, int(pid))):
                continue
            try:
                ids = [line for line in path.read_text().split() if JOB_ID.fullmatch(line)]
                for start in range(0, len(ids), self.batch):
                    self.spool(ids[start : start + self.batch])
                path.unlink(missing_ok=True)
            except Exception as exc:
                log.warning("jobs of the dead process's outbox %s not spooled yet: %s", path, exc)
                continue
            if ids:
                log.warning("%d jobs held by a process that died before spooling them: spooled now", len(ids))
            spooled += len(ids)
        return spooled
