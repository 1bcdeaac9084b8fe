"""Running one attempt of a job, in whichever process the backend chose, and what follows it."""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.db import DATABASE_ERRORS
from app.jobs.context import RunningJob, _current, logging_job
from app.jobs.errors import OutcomeNotRecorded, PermanentFailure, UnknownTask
from app.jobs.metrics import JOB_DURATION, JOB_QUEUE_WAIT, JOB_RETRIES, JOBS_FINISHED
from app.jobs.registry import Task, TaskRegistry
from app.jobs.states import JobStatus
from app.jobs.store import Claim, Verdict

if TYPE_CHECKING:
    from flask import Flask
    from prometheus_client import Counter, Histogram

    from app.jobs.backends import Backend
    from app.jobs.store import Job, JobStore

log = logging.getLogger(__name__)

# How long a mule or thread keeps retrying an outcome the database refused: about a minute.
UNRECORDED_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15, 30)


@dataclass(frozen=True)
class Outcome:
    """What became of a run: the claim's ``verdict`` and, when it changed the job, the ``status``
    it left (None when nothing ran). ``retry_at`` is set when another attempt is due."""

    job: Job | None
    verdict: Verdict
    status: JobStatus | None = None
    retry_at: float | None = None
    # With ``defer_success``: the (job, result JSON) of a success not recorded yet; the caller
    # passes it to the next ``run`` (recorded with that claim) or to ``record_success``.
    pending: tuple[Job, str] | None = None


def describe_error(exc: BaseException) -> dict[str, Any]:
    """An exception as a record keeps it: type, message and the last frames of its traceback."""
    frames = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(frames[-4:])[-4000:],
    }


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about base·2^(attempt-1), never above ``cap``."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


# The metrics' children by label values, looked up once: prometheus's ``labels()`` validates
# and locks on every call, several times per job.
@functools.lru_cache(maxsize=4096)
def _queue_wait(task: str, backend: str) -> Histogram:
    return JOB_QUEUE_WAIT.labels(task, backend)


@functools.lru_cache(maxsize=4096)
def _duration(task: str, backend: str) -> Histogram:
    return JOB_DURATION.labels(task, backend)


@functools.lru_cache(maxsize=4096)
def _finished(task: str, backend: str, status: str) -> Counter:
    return JOBS_FINISHED.labels(task, backend, status)


def observe_queue_wait(job: Job) -> None:
    """Record how long the claimed ``job`` waited since it was due: enqueued, or its delay or
    retry time (``run_at``) passed."""
    if job.started_at is not None:
        due = max(job.created_at, job.run_at or job.created_at)
        _queue_wait(job.task, job.backend).observe(max(0.0, job.started_at - due))


def is_final(task: Task, exc: BaseException) -> bool:
    """Whether ``exc`` ends the job at once: the task raised ``PermanentFailure`` or one of the
    exception classes it ``throws``."""
    return isinstance(exc, (PermanentFailure, *task.throws))


class Runner:
    """Claims a job, runs its task inside the Flask app context and records the result."""

    def __init__(self, app: Flask, store: JobStore, registry: TaskRegistry) -> None:
        self.app = app
        self.store = store
        self.registry = registry
        # Outcomes the database refused, by job id: recorded on the job's next run here.
        self._unrecorded: dict[str, Callable[[], Outcome]] = {}
        self._unrecorded_lock = threading.Lock()

    def run(
        self,
        job_id: str,
        *,
        allow_rerun: bool,
        timeout_guard: Callable[[int], None] | None = None,
        handle: str | None = None,
        succeeded: tuple[Job, str] | None = None,
        defer_success: bool = False,
    ) -> Outcome:
        """Run the next attempt of ``job_id`` and record how it ended.

        ``allow_rerun`` is for backends whose copy of the job survives a crash (the spooler):
        a record found ``running`` then starts a new attempt. ``timeout_guard(seconds)`` arms a
        hard kill of this process after the task's timeout (uWSGI's user harakiri), 0 disarms.
        ``handle``, if given, is recorded as the job's (see ``JobStore.claim``).
        Raises ``OutcomeNotRecorded`` when the attempt ended but its outcome could not be
        written; the next ``run`` of the job in this process writes it instead of running.

        ``succeeded``: a pending success (``Outcome.pending``) recorded with this run's claim,
        in one write transaction. ``defer_success``: a success is not recorded but returned as
        ``Outcome.pending``, for the next ``run`` or ``record_success``. (The spooler's batch
        files: one write per job instead of two, the records as true as before.)
        """
        with self._unrecorded_lock:
            pending = self._unrecorded.pop(job_id, None)
        if pending is not None:
            if succeeded is not None:
                self.record_success(succeeded)
            return self._record(job_id, pending)
        try:
            claim = self.store.claim(job_id, allow_rerun=allow_rerun, handle=handle, succeeded=succeeded)
        except Exception:
            if succeeded is not None:
                # Not recorded with the claim: kept for that job's next run here.
                self._keep_unrecorded(succeeded[0].id, functools.partial(self._succeed, *succeeded))
            raise
        if succeeded is not None:
            self._succeeded(succeeded[0])
        if claim.job is None:
            return Outcome(None, claim.verdict)
        with logging_job(claim.job.id, claim.job.request_id):
            return self._run_claimed(claim, timeout_guard, defer_success)

    def record_success(self, pending: tuple[Job, str]) -> Outcome:
        """Record a success ``run`` left pending (``defer_success``); raises
        ``OutcomeNotRecorded`` as ``run`` does."""
        return self._record(pending[0].id, functools.partial(self._succeed, *pending))

    def _run_claimed(
        self, claim: Claim, timeout_guard: Callable[[int], None] | None, defer_success: bool = False
    ) -> Outcome:
        """Run the attempt ``claim`` started, if it started one, and record its outcome."""
        job = claim.job
        if claim.verdict is not Verdict.RUN or job is None:
            if claim.verdict is Verdict.LOST and job is not None and claim.error is not None:
                log.warning("job %s %s failed: %s", job.id, job.task, claim.error["message"])
                _finished(job.task, job.backend, JobStatus.FAILED).inc()
                return Outcome(job, claim.verdict, JobStatus.FAILED)
            return Outcome(job, claim.verdict)
        try:
            task = self.registry.get(job.task)
        except UnknownTask as exc:
            unknown = describe_error(exc)
            return self._record(job.id, lambda: self._fail(job, unknown))

        running = RunningJob(job.id, job.attempts, job.max_attempts, self.store.report_progress)
        token = _current.set(running)
        if timeout_guard is not None and job.timeout:
            timeout_guard(math.ceil(job.timeout))
        observe_queue_wait(job)
        started = time.monotonic()
        try:
            with self.app.app_context():
                args = job.args
                result = task.func(*args) if isinstance(args, list) else task.func(**args)
            result_json = json.dumps(result, default=str)
        except (Exception, SystemExit) as exc:  # SystemExit too: a thread job would stay running
            error = describe_error(exc)
            if is_final(task, exc):
                return self._record(job.id, lambda: self._fail(job, error))
            return self._record(job.id, lambda: self._failed_attempt(job, task, error))
        finally:
            _duration(job.task, job.backend).observe(time.monotonic() - started)
            if timeout_guard is not None and job.timeout:
                timeout_guard(0)
            _current.reset(token)
        if defer_success:
            return Outcome(job, Verdict.RUN, JobStatus.SUCCEEDED, pending=(job, result_json))
        return self._record(job.id, lambda: self._succeed(job, result_json))

    def record_kept(self) -> list[Outcome]:
        """Write the outcomes the database refused earlier in this process, without waiting for
        each job to come back here: a spooler's file can go to a sibling spooler, which finds the
        job still running in this live process and can only put it off. Returns those written;
        those refused again stay kept."""
        if not self._unrecorded:
            return []
        with self._unrecorded_lock:
            kept = list(self._unrecorded.items())
            self._unrecorded.clear()
        written = []
        for job_id, write in kept:
            try:
                written.append(self._record(job_id, write))
            except OutcomeNotRecorded:
                continue  # kept again by _record, for the next call
        return written

    def _record(self, job_id: str, write: Callable[[], Outcome]) -> Outcome:
        """Run ``write``, the attempt's outcome; if the database refuses it, keep it for the job's
        next run here and raise ``OutcomeNotRecorded``."""
        try:
            return write()
        except DATABASE_ERRORS as exc:
            self._keep_unrecorded(job_id, write)
            raise OutcomeNotRecorded(f"job {job_id}: its outcome is not recorded yet: {exc}") from exc

    def _keep_unrecorded(self, job_id: str, write: Callable[[], Outcome]) -> None:
        with self._unrecorded_lock:
            self._unrecorded[job_id] = write

    def _succeed(self, job: Job, result_json: str) -> Outcome:
        self.store.succeed(job, result_json)
        self._succeeded(job)
        return Outcome(job, Verdict.RUN, JobStatus.SUCCEEDED)

    @staticmethod
    def _succeeded(job: Job) -> None:
        """What follows a recorded success: its metric and its log line."""
        _finished(job.task, job.backend, JobStatus.SUCCEEDED).inc()
        with logging_job(job.id, job.request_id):
            log.info("job %s %s succeeded on attempt %d", job.id, job.task, job.attempts)

    def _fail(self, job: Job, error: dict[str, Any]) -> Outcome:
        """Fail the job at once: its failure is final, whatever attempts remain."""
        self.store.fail_attempt(job, error, retry_at=None)
        _finished(job.task, job.backend, JobStatus.FAILED).inc()
        log.warning("job %s %s failed for good: %s", job.id, job.task, error["message"])
        return Outcome(job, Verdict.RUN, JobStatus.FAILED)

    def _failed_attempt(self, job: Job, task: Task, error: dict[str, Any]) -> Outcome:
        if job.attempts < job.max_attempts:
            retry_at = time.time() + backoff_delay(job.attempts, task.backoff, task.max_backoff)
            self.store.fail_attempt(job, error, retry_at=retry_at)
            JOB_RETRIES.labels(job.task).inc()
            log.info(
                "job %s %s attempt %d failed (%s), retry due",
                job.id,
                job.task,
                job.attempts,
                error["message"],
            )
            return Outcome(job, Verdict.RUN, JobStatus.RETRYING, retry_at)
        self.store.fail_attempt(job, error, retry_at=None)
        _finished(job.task, job.backend, JobStatus.FAILED).inc()
        log.warning(
            "job %s %s failed after %d attempts: %s", job.id, job.task, job.attempts, error["message"]
        )
        return Outcome(job, Verdict.RUN, JobStatus.FAILED)

    def run_once(
        self, job_id: str, retries: Backend, timeout_guard: Callable[[int], None] | None = None
    ) -> None:
        """``run`` for backends that hold the only copy of the job (mules, threads), handing a
        retry to ``retries``; never raises. After an internal error (the database, say) the
        job is failed rather than left ``running`` or ``retrying``, as far as that error allows."""
        try:
            outcome = self._run_until_recorded(job_id, timeout_guard)
            if outcome.retry_at is not None and outcome.job is not None:
                retries.submit(outcome.job, outcome.retry_at)
        except Exception as exc:
            log.exception("job %s: internal error", job_id)
            try:
                job = self.store.get(job_id)
                if job is not None and job.status == JobStatus.RUNNING:
                    self.store.fail_attempt(job, describe_error(exc), retry_at=None)
                elif job is not None:
                    self.store.fail_unstarted(job_id, describe_error(exc))
            except Exception:
                log.exception("job %s: could not record its internal error", job_id)

    def _run_until_recorded(self, job_id: str, timeout_guard: Callable[[int], None] | None) -> Outcome:
        """``run``, then, while the database refuses the outcome, retry writing it with backoff
        for up to a minute: a mule or thread job has no file to come back to it later."""
        try:
            return self.run(job_id, allow_rerun=False, timeout_guard=timeout_guard)
        except OutcomeNotRecorded:
            log.warning("job %s: outcome not recorded, retrying the write", job_id)
        for delay in UNRECORDED_RETRY_DELAYS:
            time.sleep(delay)
            try:
                return self.run(job_id, allow_rerun=False)
            except OutcomeNotRecorded:
                continue
        raise OutcomeNotRecorded(f"job {job_id}: its outcome could not be recorded")
