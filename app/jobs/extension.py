"""The job layer as a Flask extension: enqueue, retry and cancel jobs, and wire up uWSGI."""

from __future__ import annotations

import importlib
import json
import logging
import re
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from flask import current_app, has_request_context, request

from app import runtime
from app.db import Database
from app.jobs.backends import Backend, QueueFull
from app.jobs.backends.mule import MuleBackend
from app.jobs.backends.spooler import SpoolerBackend
from app.jobs.backends.thread import InlineBackend, ThreadBackend
from app.jobs.periodic import Schedule, install
from app.jobs.registry import BACKENDS, MAX_ATTEMPTS, InvalidJob, JobError, Task, registry
from app.jobs.runner import Runner, describe_error
from app.jobs.schema import MIGRATIONS
from app.jobs.store import CANCELLED, Job, JobStore

if TYPE_CHECKING:
    from flask import Flask

    from app.settings import Settings

log = logging.getLogger(__name__)

MAX_DELAY = 30 * 86400
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def current_jobs() -> Jobs:
    """The job layer of the current Flask app."""
    jobs: Jobs = current_app.extensions["jobs"]
    return jobs


class JobNotFound(JobError):
    """No job has that id."""


class JobConflict(JobError):
    """The job is not in a state that allows the operation."""


class Jobs:
    """Everything a process needs to enqueue and run jobs; one per Flask app."""

    def __init__(self, app: Flask, settings: Settings, *, local_mode: str | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.database_path, MIGRATIONS)
        self.store = JobStore(self.db)
        self.registry = registry
        self.runner = Runner(app, self.store, registry)
        self._import_tasks()
        self.uwsgi: Any = runtime.uwsgi_module()
        self.backends: dict[str, Backend] = {}
        if self.uwsgi is not None:
            self.spooler = SpoolerBackend(self.uwsgi, settings.spool_dir, self.store)
            self.backends["spooler"] = self.spooler
            self.backends["thread"] = ThreadBackend(self.runner, later=self.spooler)
            if settings.mules > 0:
                self.backends["mule"] = MuleBackend(self.uwsgi, self.spooler)
        else:
            mode = local_mode or settings.jobs_local_mode
            local: Backend = InlineBackend(self.runner) if mode == "inline" else ThreadBackend(self.runner)
            self.backends = dict.fromkeys(BACKENDS, local)
        app.extensions["jobs"] = self

    def _import_tasks(self) -> None:
        """Import the modules whose decorators register tasks."""
        modules = ["app.jobs.maintenance", "app.examples.tasks"]
        if self.settings.jobs_diag:
            modules.append("app.jobs.diag")
        modules += self.settings.jobs_import
        for module in modules:
            importlib.import_module(module)

    def install_uwsgi_hooks(self) -> None:
        """In the uWSGI master, before the fork: the spooler function, the mule handler, timers."""
        uwsgi = self.uwsgi
        assert uwsgi is not None
        runner = self.runner
        spooler = self.spooler
        uwsgi.spooler = lambda message: spooler.handle(runner, message)
        mule = self.backends.get("mule")
        if isinstance(mule, MuleBackend):
            uwsgi.mule_msg_hook = lambda message: mule.handle(runner, message)
        install(uwsgi, self._fire_periodic)

    def _fire_periodic(self, schedule: Schedule, slot: int) -> None:
        try:
            self.enqueue(schedule.task, {}, unique_key=f"periodic:{schedule.task}:{slot}")
        except JobError:
            log.exception("periodic job %s for slot %d was not enqueued", schedule.task, slot)

    def enqueue(
        self,
        task_name: str,
        args: dict[str, Any] | list[Any] | None = None,
        *,
        backend: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        request_id: str | None = None,
        unique_key: str | None = None,
    ) -> Job:
        """Record a job and hand it to its backend; returns the record at once.

        Raises ``UnknownTask``, ``InvalidJob`` (arguments not JSON, bad options), ``QueueFull``
        (a mule task whose queue is full, the job recorded as failed) or ``JobError``.
        A periodic ``unique_key`` already used returns the job that holds it.
        """
        task = self.registry.get(task_name)
        backend = backend or task.backend
        problems = self.option_problems(args, backend, delay, max_attempts)
        if problems:
            raise InvalidJob("invalid job", problems)
        handler = self.backends[backend]
        try:
            args_json = json.dumps(args if args is not None else {}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidJob("args must be JSON-serialisable", {"args": str(exc)}) from None
        run_at = time.time() + delay if delay else None
        job = self.store.create(
            task=task.name,
            args_json=args_json,
            backend=backend,
            max_attempts=max_attempts or task.max_attempts,
            timeout=task.timeout,
            run_at=run_at,
            request_id=request_id or _request_id(),
            unique_key=unique_key,
            handle=handler.new_handle(),
        )
        if job is None:
            assert unique_key is not None
            existing = self.store.get_by_unique_key(unique_key)
            assert existing is not None  # the key is taken, and records with one are not purged early
            return existing
        self._submit(job, task, run_at)
        try:
            return self.store.get(job.id) or job
        except sqlite3.Error:
            return job  # handed over: it exists and will run, whatever the database says now

    def option_problems(
        self, args: object, backend: object, delay: object, max_attempts: object
    ) -> dict[str, str]:
        """What is wrong with a job's options, by field: the rules for Python callers and the API.
        A ``backend`` of None stands for the task's own."""
        details = {}
        if args is not None and not isinstance(args, (dict, list)):
            details["args"] = "must be an object (keyword arguments) or an array"
        if backend is not None and backend not in BACKENDS:
            details["backend"] = f"must be one of {', '.join(BACKENDS)}"
        elif backend is not None and backend not in self.backends:
            details["backend"] = f"{backend} is not available here (MULES=0?)"
        if delay is not None and not (
            isinstance(delay, (int, float)) and not isinstance(delay, bool) and 0 <= delay <= MAX_DELAY
        ):
            details["delay"] = f"must be a number of seconds from 0 to {MAX_DELAY}"
        if max_attempts is not None and not (
            isinstance(max_attempts, int)
            and not isinstance(max_attempts, bool)
            and 1 <= max_attempts <= MAX_ATTEMPTS
        ):
            details["max_attempts"] = f"must be a whole number from 1 to {MAX_ATTEMPTS}"
        return details

    def _submit(self, job: Job, task: Task, run_at: float | None) -> None:
        """Hand the recorded job to its backend (or, when a mule queue is full and the task
        says so, to the spooler). If that fails, the job is failed, so that the record agrees
        with the error raised: the job will not run."""
        try:
            try:
                self.backends[job.backend].submit(job, run_at)
            except QueueFull:
                if task.on_full != "spooler" or "spooler" not in self.backends:
                    raise
                self.backends["spooler"].submit(job, run_at)
        except Exception as exc:
            self._fail_unsubmitted(job, exc)
            if isinstance(exc, JobError):
                raise
            raise JobError(f"job {job.id} could not be handed to the {job.backend}: {exc}") from exc

    def _fail_unsubmitted(self, job: Job, exc: Exception) -> None:
        """Fail a job its backend refused; on a full disk the write may need a few tries."""
        for delay in (0.0, 0.2, 1.0):
            time.sleep(delay)
            try:
                self.store.fail_unstarted(job.id, describe_error(exc))
                return
            except sqlite3.Error as error:
                last = error
        log.error("job %s was not handed over and stays queued in the record: %s", job.id, last)

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return job

    def retry(self, job_id: str) -> Job:
        """Run a failed (or cancelled) job again, with its task's number of attempts."""
        job = self.get(job_id)
        task = self.registry.get(job.task)
        handler = self.backends.get(job.backend)
        if handler is None:
            raise JobConflict(f"job {job_id} ran on the {job.backend}, which is not available here")
        requeued = self.store.requeue(job_id, task.max_attempts, handle=handler.new_handle())
        if requeued is None:
            raise JobConflict(f"job {job_id} is {job.status}: only failed or cancelled jobs can be retried")
        self._submit(requeued, task, None)
        return self.get(job_id)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not started; its backend drops its copy (a spool file)."""
        job = self.get(job_id)
        if job.status == CANCELLED:
            return job
        if not self.store.cancel(job_id):
            raise JobConflict(f"job {job_id} is {job.status}: only jobs not yet started can be cancelled")
        handler = self.backends.get(job.backend)
        if handler is not None:
            handler.cancel(job)
        return self.get(job_id)


def _request_id() -> str | None:
    """The X-Request-ID of the request enqueueing the job, if any."""
    if has_request_context():
        supplied = request.headers.get("X-Request-ID", "")
        # As nginx passes it on: short and plain, or not at all (no log or JSON injection).
        return supplied if REQUEST_ID.fullmatch(supplied) else None
    return None
