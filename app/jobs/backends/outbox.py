"""A worker's spooler jobs held back for a moment, to share a spool file: group commit.

A request that enqueues jobs one after the other would write a spool file per job, and a
file costs more than the job's record: ext4 searches for each new file's inode (past every
inode deleted in the last minute, on a file system without a journal), the spoolers scan,
lock, read and delete each one, and each single-job file costs them two write transactions
where a batch file's jobs take one each. So the first job a request enqueues is spooled at
once, as ever, and the ones after it wait here until ``BATCH_JOBS`` of them wait, ``LINGER``
has passed or the request ends (whichever comes first): then one file takes them all.

Meanwhile the journal (``SPOOL_DIR/.outbox/RUN-PID``, a job id a line, emptied once they are
spooled) is their durable copy, as the spool file is afterwards: a worker killed with jobs
waiting here (a harakiri, the OOM killer) leaves it behind, and the reaper spools its jobs
(``recover``). A job spooled twice that way still runs once: its second file's claim finds it
started or finished, and skips it.
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

# How long a job may wait for others to share its file: a request that goes on computing after
# its enqueues holds them no longer than this (the outbox's thread spools them).
LINGER = 0.005
# How long a file the spooler refused (a full disk) waits before it is tried again.
RETRY_AFTER = 1.0
# A job id, as ``store.new_job_id`` makes them.
JOB_ID = re.compile(r"[0-9a-f]{32}")

# Writes one spool file for these job ids; raises ``JobError`` when uWSGI refuses it.
Spool = Callable[[Sequence[str]], None]


class Outbox:
    """The jobs held back in this process (after a fork, a new one), and their journal."""

    def __init__(self, spool: Spool, directory: Path, batch: int, linger: float = LINGER) -> None:
        self.spool = spool
        self.directory = directory
        self.batch = batch
        self.linger = linger
        self._pid = 0

    def _here(self) -> None:
        """This process's state: made anew in a process forked from the one that had it."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._ready = threading.Condition()
        self._pending: list[str] = []
        self._due_at = 0.0
        self._refused = False
        self._journal: int | None = None
        self._thread: threading.Thread | None = None

    def add(self, job_id: str) -> bool:
        """Hold ``job_id`` back until it can share a file; False when it cannot be (its journal
        line not written, or the spooler refusing files): the caller spools it itself."""
        self._here()
        with self._ready:
            if self._refused:
                return False
            try:
                self._append(job_id)
            except OSError as exc:
                log.warning("job %s spooled on its own: its outbox journal was not written: %s", job_id, exc)
                return False
            self._pending.append(job_id)
            if len(self._pending) == 1:
                self._due_at = time.monotonic() + self.linger
                self._start_thread()
                self._ready.notify()
            if len(self._pending) >= self.batch or time.monotonic() >= self._due_at:
                self._flush()
            return True

    def flush(self) -> None:
        """Spool every job held back (the end of a request); never raises: what the spooler
        refuses stays, journaled, and is tried again ``RETRY_AFTER`` later."""
        if self._pid != os.getpid():
            return
        with self._ready:
            if self._pending and not self._refused:
                self._flush()

    def _flush(self) -> None:
        """Spool the pending jobs, a file per ``batch``, and empty the journal of those spooled.
        A refusal is logged once, and so is the end of it."""
        while self._pending:
            ids = self._pending[: self.batch]
            try:
                self.spool(ids)
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
                break
            del self._pending[: len(ids)]
        else:
            if self._refused:
                log.warning("the jobs held for the spooler are spooled now")
            self._refused = False
        self._rewrite_journal()

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._linger_forever, name="spool-outbox", daemon=True)
            self._thread.start()

    def _linger_forever(self) -> None:
        """Spool what has waited ``linger`` (or, refused, ``RETRY_AFTER``): the jobs of a request
        that goes on working after its enqueues, or that the spooler refused."""
        with self._ready:
            while True:
                while not self._pending:
                    self._ready.wait()
                wait = self._due_at - time.monotonic()
                if wait > 0:
                    self._ready.wait(wait)
                    continue
                self._flush()

    def _journal_path(self) -> Path:
        me = owner.here()
        return self.directory / f"{me.run}-{me.pid}"

    def _append(self, job_id: str) -> None:
        if self._journal is None:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            self._journal = os.open(self._journal_path(), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._journal, f"{job_id}\n".encode())

    def _rewrite_journal(self) -> None:
        """The journal as the pending jobs now are: empty once all are spooled."""
        if self._journal is None:
            return
        try:
            os.ftruncate(self._journal, 0)
            if self._pending:
                os.write(self._journal, "".join(f"{job_id}\n" for job_id in self._pending).encode())
        except OSError as exc:  # the jobs already spooled may be spooled again: they run once
            log.warning("outbox journal not rewritten: %s", exc)

    def recover(self) -> int:
        """Spool the jobs in the journals of this node's dead processes, then remove those
        journals; returns how many jobs were spooled. A journal the spooler refuses stays for
        the next call."""
        try:
            journals = [path for path in self.directory.iterdir() if path.is_file()]
        except FileNotFoundError:
            return 0
        spooled = 0
        for path in journals:
            run, _, pid = path.name.rpartition("-")
            if not pid.isdigit() or owner.alive(owner.Owner(owner.node_id(), run, int(pid))):
                continue
            try:
                ids = [line for line in path.read_text().split() if JOB_ID.fullmatch(line)]
                for start in range(0, len(ids), self.batch):
                    self.spool(ids[start : start + self.batch])
            except Exception as exc:
                log.warning("jobs of the dead process's outbox %s not spooled yet: %s", path, exc)
                continue
            if ids:
                log.warning("%d jobs held by a process that died before spooling them: spooled now", len(ids))
            path.unlink(missing_ok=True)
            spooled += len(ids)
        return spooled
