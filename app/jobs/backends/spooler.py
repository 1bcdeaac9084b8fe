"""The uWSGI spooler: a file per job in SPOOL_DIR, run by the spooler processes.

The file is the job's durable copy: it is deleted only once the job has succeeded or failed
for good. A retry keeps the same file and moves its mtime (uWSGI's ``at``) to the retry time,
so a waiting job holds no process; a process killed mid-job leaves the file to be run again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from app.db import DATABASE_ERRORS
from app.jobs import owner
from app.jobs.backends.outbox import Outbox
from app.jobs.errors import JobError, OutcomeNotRecorded
from app.jobs.runner import Runner
from app.jobs.states import JobStatus
from app.jobs.store import Job, JobStore, Verdict, error_record, lost_attempt_error


def _is_batch(path: str) -> bool:
    """Whether the spool file at ``path`` is a batch's (``submit_batch``)."""
    try:
        with open(path, "rb") as file:
            return file.read(10)[4:] == BATCH_KEY
    except OSError:
        return False


log = logging.getLogger(__name__)

SPOOL_OK = -2  # the task is finished: uWSGI deletes the file
SPOOL_RETRY = -1  # keep the file; it runs again once its mtime has passed
RETRY_AFTER_INTERNAL_ERROR = 5.0
# A job found running in another live spooler of this node, which is not running its file (it
# holds the file locked while it does): that spooler keeps an outcome the database refused, and
# writes it at its next file (``Runner.record_kept``). Put off briefly, not for 5 s a time: the
# file could keep going to this spooler (a full-disk test saw a job wait 60 s that way).
RETRY_AFTER_BUSY = 1.0
# Jobs per spool file that ``enqueue_many`` writes (33 bytes of the 64 KB packet each): few
# enough that every spooler gets files of a large batch, many enough to spare a file per job.
BATCH_JOBS = 100
# In SPOOL_DIR: the journals of the jobs held back for a shared file (uWSGI runs only files
# named uwsgi_spoolfile_on_*).
OUTBOX_DIR = ".outbox"
# How a batch file's packet starts, after its 4-byte header: the one key, "jobs".
BATCH_KEY = b"\x04\x00jobs"


class SpoolerBackend:
    name = "spooler"
    volatile = False

    def __init__(self, uwsgi: ModuleType, spool_dir: Path, store: JobStore, nice: int | None = None) -> None:
        """``nice``: the CPU priority each spooler process takes at its first job, in place of
        the lowest (19) that uWSGI gives it; None keeps uWSGI's (see ``take_priority``)."""
        self.uwsgi = uwsgi
        self.spool_dir = spool_dir
        self.store = store
        self.nice = nice
        self._prioritised_pid = 0
        self.outbox = Outbox(self.submit_batch, spool_dir / OUTBOX_DIR, BATCH_JOBS)

    def new_handle(self) -> str | None:
        """None: the handle is the spool file's path, known once uWSGI has written it."""
        return None

    def changes_record(self, job: Job, at: float | None) -> bool:
        """Whether ``submit`` writes to the job's record (its spool file's path): only when a
        cancel may need it (a delayed job) or the record names another backend (a mule's retry
        or overflow). A job due now has it recorded by the claim that starts it, one write
        transaction less per job; cancelled before that, its file is run once more, and the
        claim skips it (the record is no longer waiting)."""
        return (at is not None and at > time.time()) or job.backend != self.name

    def submit(self, job: Job, at: float | None = None) -> None:
        """Write the job's spool file; raises ``JobError`` if uWSGI refuses it. Once the file is
        written the job will run, so a failure to record its path is only logged."""
        message = {b"job": job.id.encode()}
        if at is not None and at > time.time():
            message[b"at"] = str(math.ceil(at)).encode()
        try:
            path = self.uwsgi.spool(message)
        except Exception as exc:
            raise JobError(f"the spooler refused job {job.id}: {exc}") from exc
        if not self.changes_record(job, at):
            return
        try:
            # The backend too: a mule job's delay or retry runs here, with the spooler's guarantee.
            self.store.set_handle(job.id, os.fsdecode(path), backend=self.name)
        except DATABASE_ERRORS as exc:
            log.warning("job %s is spooled, but its spool file's path was not recorded: %s", job.id, exc)

    def submit_batch(self, job_ids: Sequence[str]) -> None:
        """Write one spool file for the jobs ``job_ids`` (at most ``BATCH_JOBS``, due now,
        records of this backend); raises ``JobError`` if uWSGI refuses it. A spooler runs them
        one after the other; the file goes once each has finished or been handed on (see
        ``handle``)."""
        message = {b"jobs": ",".join(job_ids).encode()}
        try:
            self.uwsgi.spool(message)
        except Exception as exc:
            raise JobError(f"the spooler refused a batch of {len(job_ids)} jobs: {exc}") from exc

    def lost(self, job: Job) -> dict[str, Any] | None:
        """A job whose spool file exists is not lost: the spooler runs it (again)."""
        if job.handle and os.path.exists(job.handle):
            return None
        if job.status == JobStatus.RUNNING:
            return None if owner.alive(job.holder) else lost_attempt_error(job, time.time())
        return error_record("WorkerLost", f"its spool file {job.handle} is gone")

    def cancel(self, job: Job) -> None:
        """Remove the job's spool file, so that it never comes up; never a batch's file, which
        holds other jobs too (it runs, and the claim skips the cancelled job)."""
        if job.handle and not _is_batch(job.handle):
            with contextlib.suppress(OSError):
                os.unlink(job.handle)

    def spooler_function(self, runner: Runner, message: dict[Any, Any]) -> int:
        """What uWSGI calls with each spool file: ``handle`` it, then wake this spooler's own scan.

        uWSGI wakes a spooler (SIGUSR1) when a file is written only if that spooler is idle, and
        a spooler's scan is one pass of readdir: a file written while the spooler runs a job,
        into a slot of the directory its pass has gone by, is seen at the next periodic scan
        only, a second later (spooler-frequency). The end of a burst hit it every time in probes
        (400 jobs enqueued in 0.1 s: the last ones started 1.03-1.05 s after the last enqueue,
        end to end 345 jobs/s). With a wake-up of its own after every file, a pass that ran a
        job is always followed by another; what it costs is one empty readdir per job once a
        burst is over."""
        try:
            return self.handle(runner, message)
        finally:
            os.kill(os.getpid(), signal.SIGUSR1)

    def handle(self, runner: Runner, message: dict[Any, Any]) -> int:
        """Run the job (or batch) of one spool file; never raises, since uWSGI would retry a
        raising task forever."""
        if self.nice is not None and self._prioritised_pid != os.getpid():
            self.take_priority()
        path = self.spool_dir / os.path.basename(os.fsdecode(message.get("spooler_task_name", b"")))
        if path in self._record_kept(runner):
            return SPOOL_RETRY  # its retry was written just now, and is not due yet
        if b"jobs" in message:
            return self._handle_batch(runner, path, message[b"jobs"])
        try:
            job_id = message[b"job"].decode()
        except (KeyError, AttributeError, UnicodeDecodeError):
            log.error("spool file %s has no job id: dropped", path)
            return SPOOL_OK
        try:
            outcome = runner.run(
                job_id, allow_rerun=True, timeout_guard=self.uwsgi.set_user_harakiri, handle=str(path)
            )
        except OutcomeNotRecorded as exc:
            log.warning("%s: spool file kept until it is", exc)
            return self._postpone(path, time.time() + RETRY_AFTER_INTERNAL_ERROR)
        except Exception:
            log.exception("job %s: internal error, spool file kept for a later try", job_id)
            return self._postpone(path, time.time() + RETRY_AFTER_INTERNAL_ERROR)
        if outcome.verdict is Verdict.BUSY:
            log.warning("job %s is still running in another live process: file kept", job_id)
            return self._postpone(path, time.time() + RETRY_AFTER_BUSY)
        if outcome.retry_at is not None:
            return self._postpone(path, outcome.retry_at)
        return SPOOL_OK

    def _record_kept(self, runner: Runner) -> set[Path]:
        """Write this process's kept outcomes (``Runner.record_kept``); a retry written so keeps
        its backoff: its file (the record's handle) is put off to the retry's time. Returns the
        files put off; never raises."""
        try:
            written = runner.record_kept()
        except Exception:
            log.exception("kept job outcomes: internal error, tried again at the next file")
            return set()
        later = set()
        for outcome in written:
            if outcome.retry_at is not None and outcome.job is not None and outcome.job.handle:
                file = Path(outcome.job.handle)
                self._postpone(file, outcome.retry_at)
                later.add(file)
        return later

    def take_priority(self) -> None:
        """Renice this spooler process to ``nice``, once per process. uWSGI starts spoolers at
        nice 19: while the HTTP workers saturate the CPU a spooler then runs almost never (queue
        wait p99 of seconds at 200 jobs/s; at SPOOLER_NICE's 10, tens of ms:
        bench/results/latest.md). Going below 19 needs root, CAP_SYS_NICE or a nice rlimit of
        20 - nice (``ulimit -e 10``; Compose's ``ulimits: nice`` gives one where the engine may set
        it, which the one tried, its dockerd without CAP_SYS_RESOURCE, may not); without them the
        spooler stays at 19, said once in the log."""
        self._prioritised_pid = os.getpid()
        assert self.nice is not None
        try:
            os.setpriority(os.PRIO_PROCESS, 0, self.nice)
        except OSError as exc:
            log.warning(
                "spooler stays at nice %d, not SPOOLER_NICE=%d (%s): its jobs wait while requests"
                " saturate the CPU; allow it with root, CAP_SYS_NICE or a nice rlimit (ulimit -e %d),"
                " or set SPOOLER_NICE=19",
                os.getpriority(os.PRIO_PROCESS, 0),
                self.nice,
                exc.strerror,
                20 - self.nice,
            )

    def _handle_batch(self, runner: Runner, path: Path, ids: bytes) -> int:
        """Run each job of a batch file; keep the file (postponed) while one of them needs
        another go at it. A job already finished is skipped by its claim when the file runs again.

        A job's success is recorded with the next job's claim, in one write transaction (the last
        one's alone): the write lock, which every enqueue and job waits for, is taken once per
        job instead of twice."""
        try:
            job_ids = ids.decode().split(",")
        except (AttributeError, UnicodeDecodeError):
            log.error("spool file %s has no job ids: dropped", path)
            return SPOOL_OK
        again: float | None = None
        pending: tuple[Job, str] | None = None
        for job_id in job_ids:
            when, pending = self._run_in_batch(runner, path, job_id, pending)
            if when is not None:
                again = when if again is None else min(again, when)
        if pending is not None:
            when = self._record_last(runner, pending)
            if when is not None:
                again = when if again is None else min(again, when)
        return SPOOL_OK if again is None else self._postpone(path, again)

    def _run_in_batch(
        self, runner: Runner, path: Path, job_id: str, succeeded: tuple[Job, str] | None
    ) -> tuple[float | None, tuple[Job, str] | None]:
        """Run one job of a batch file, recording ``succeeded`` (the previous job's success) with
        its claim; returns when the file must run again for it (or None), and its own success
        if it succeeded, not recorded yet. On an error the previous success is kept by the
        runner, and written when the file runs again."""
        try:
            outcome = runner.run(
                job_id,
                allow_rerun=True,
                timeout_guard=self.uwsgi.set_user_harakiri,
                handle=str(path),
                succeeded=succeeded,
                defer_success=True,
            )
        except OutcomeNotRecorded as exc:
            log.warning("%s: batch spool file kept until it is", exc)
            return time.time() + RETRY_AFTER_INTERNAL_ERROR, None
        except Exception:
            log.exception("job %s: internal error, batch spool file kept for a later try", job_id)
            return time.time() + RETRY_AFTER_INTERNAL_ERROR, None
        if outcome.verdict is Verdict.BUSY:
            log.warning("job %s is still running in another live process: batch file kept", job_id)
            return time.time() + RETRY_AFTER_BUSY, None
        if outcome.retry_at is not None and outcome.job is not None:
            # A file of its own, so that its backoff holds and the batch's file can go.
            try:
                self.submit(outcome.job, outcome.retry_at)
            except JobError:
                log.exception("job %s: its retry was not spooled; batch file kept for it", job_id)
                return outcome.retry_at, None
        return None, outcome.pending

    @staticmethod
    def _record_last(runner: Runner, pending: tuple[Job, str]) -> float | None:
        """Record the batch's last success; when the database refuses it, the file is kept and
        the runner writes it when the file runs again."""
        try:
            runner.record_success(pending)
        except OutcomeNotRecorded as exc:
            log.warning("%s: batch spool file kept until it is", exc)
            return time.time() + RETRY_AFTER_INTERNAL_ERROR
        except Exception:
            log.exception("job %s: internal error, batch spool file kept for a later try", pending[0].id)
            return time.time() + RETRY_AFTER_INTERNAL_ERROR
        return None

    @staticmethod
    def _postpone(path: Path, at: float) -> int:
        """Keep the file and move its mtime (uWSGI's ``at``) to ``at``."""
        when = math.ceil(at)
        try:
            os.utime(path, (when, when))
        except OSError as exc:  # cancelled meanwhile: the file is gone, nothing to run
            log.info("spool file %s not postponed: %s", path, exc.strerror)
        return SPOOL_RETRY
