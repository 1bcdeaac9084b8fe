"""The job layer as a Flask extension: enqueue, retry and cancel jobs, and wire up uWSGI."""

from __future__ import annotations

import builtins
import importlib
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import after_this_request, current_app, g, has_request_context

from app import runtime
from app.db import DATABASE_ERRORS, Database, SqliteDatabase, open_database
from app.jobs import owner
from app.jobs.backends import Backend
from app.jobs.backends.mule import MuleBackend
from app.jobs.backends.spooler import BATCH_JOBS, SpoolerBackend
from app.jobs.backends.thread import InlineBackend, ThreadBackend
from app.jobs.errors import InvalidJob, JobConflict, JobError, JobNotFound, QueueFull
from app.jobs.heartbeat import Heartbeat
from app.jobs.periodic import Schedule, install
from app.jobs.registry import BACKENDS, Task, attempts_problem, registry
from app.jobs.runner import Runner, describe_error
from app.jobs.schema import MIGRATIONS
from app.jobs.states import JobStatus
from app.jobs.store import Job, JobStore, new_job_id

if TYPE_CHECKING:
    from flask import Flask, Response

    from app.settings import Settings

log = logging.getLogger(__name__)

MAX_DELAY = 30 * 86400
# On ``flask.g``: whether this request has handed a spooler job over ("spooled": the next ones
# may wait in the outbox), and whether it holds one there ("holding": its end spools them).
REQUEST_SPOOLING = "jobs_spooling"
# The job layer's own tasks (purge, reap): imported whatever the app asks for.
OWN_TASKS = ("app.jobs.maintenance",)


def current_jobs() -> Jobs:
    """The job layer of the current Flask app."""
    jobs: Jobs = current_app.extensions["jobs"]
    return jobs


class Jobs:
    """Everything a process needs to enqueue and run jobs; one per Flask app."""

    def __init__(
        self,
        app: Flask,
        settings: Settings,
        *,
        task_modules: Sequence[str] = (),
        local_mode: str | None = None,
    ) -> None:
        """Open (and migrate) the job store, import ``task_modules`` (whose decorators register
        the tasks) and pick the backends; in the uWSGI master, install the spooler function,
        the mule handler and the periodic timers, before the fork."""
        self.settings = settings
        self.db: Database = open_database(
            settings.database_url, settings.database_path, MIGRATIONS, password=settings.database_password
        )
        self.db.migrate()
        self.store = JobStore(self.db)
        owner.configure(
            settings.node_name or owner.spool_node_name(settings.spool_dir),
            self.store.beats,
            settings.node_timeout,
        )
        self.heartbeat = Heartbeat(self.store, settings.heartbeat_interval)
        self.registry = registry
        self.runner = Runner(app, self.store, registry)
        for module in (*OWN_TASKS, *task_modules):
            importlib.import_module(module)
        self.uwsgi: Any = runtime.uwsgi_module()
        self.backends: dict[str, Backend] = {}
        # Whether a request's spooler jobs after its first wait to share a spool file (a worker's).
        self.holds_back = False
        if self.uwsgi is not None:
            self.spooler = SpoolerBackend(
                self.uwsgi, settings.spool_dir, self.store, nice=settings.spooler_nice
            )
            self.backends["spooler"] = self.spooler
            self.backends["thread"] = ThreadBackend(self.runner, later=self.spooler)
            if settings.mules > 0:
                self.backends["mule"] = MuleBackend(self.uwsgi, self.spooler)
        else:
            mode = local_mode or settings.jobs_local_mode
            local: Backend = InlineBackend(self.runner) if mode == "inline" else ThreadBackend(self.runner)
            self.backends = dict.fromkeys(BACKENDS, local)
        app.extensions["jobs"] = self
        if runtime.is_master():
            self._install_uwsgi_hooks()

    def _install_uwsgi_hooks(self) -> None:
        """In the uWSGI master, before the fork: the spooler function, the mule handler, timers,
        and the heartbeat thread each worker starts after the fork (see ``app.jobs.heartbeat``)."""
        uwsgi = self.uwsgi
        assert uwsgi is not None
        runner = self.runner
        spooler = self.spooler
        uwsgi.spooler = lambda message: spooler.spooler_function(runner, message)
        mule = self.backends.get("mule")
        if isinstance(mule, MuleBackend):
            uwsgi.mule_msg_hook = lambda message: mule.handle(runner, message)
        install(uwsgi, self._fire_periodic)
        previous = getattr(uwsgi, "post_fork_hook", None)

        def post_fork() -> None:
            if previous is not None:
                previous()
            self.after_fork(uwsgi.worker_id())

        uwsgi.post_fork_hook = post_fork

    def after_fork(self, worker_id: int) -> None:
        """In each process uWSGI forks: ``worker_id`` > 0 in a worker, 0 in a spooler or mule."""
        if worker_id > 0:
            self.heartbeat.start()
            if self.uwsgi is not None:
                self.spooler.outbox.start()
                self.holds_back = True
            if isinstance(self.db, SqliteDatabase):
                # SQLite's checkpoints fall mostly to the spoolers and mules (a worker's commits
                # make one 4x less often, and never a forced one), not to a request's enqueue: one
                # took 2-3 ms, the tail of a job's queue wait at 200 jobs/s (p99 2.8-5.6 ms
                # before, 0.83-0.85 ms after; probes of 2,000 jobs POSTed at 200/s).
                self.db.serves_requests = True

    def _fire_periodic(self, schedule: Schedule, slot: int) -> None:
        # A per-node task's key carries the node: each node runs it once per period.
        scope = f"{owner.node_id()}:" if schedule.per_node else ""
        try:
            self.enqueue(schedule.task, {}, unique_key=f"periodic:{schedule.task}:{scope}{slot}")
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
        """Record a job and hand it to its backend; returns the record at once. ``request_id``
        is the enqueuing request's, kept on the record to follow it through the logs. In a
        worker, a request's spooler jobs after its first are journaled, then handed over
        together, by the time the request answers at the latest (``_reserve``).

        Raises ``InvalidJob`` (arguments not JSON, bad options: see ``option_problems``),
        ``UnknownTask``, ``QueueFull`` (a mule task whose queue is full, the job recorded as
        failed) or ``JobError``. A periodic ``unique_key`` already used returns the job that holds it.
        """
        problems = self.option_problems(
            task=task_name, args=args, backend=backend, delay=delay, max_attempts=max_attempts
        )
        if problems:
            raise InvalidJob("the job is not valid", problems)
        task = self.registry.get(task_name)
        backend = backend or task.backend
        handler = self.backends[backend]
        try:
            args_json = json.dumps(args if args is not None else {}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidJob("args must be JSON-serialisable", {"args": str(exc)}) from None
        run_at = time.time() + delay if delay else None
        held = self._reserve(handler, run_at)
        # A checkpoint due in the record's commit waits until the job is handed over.
        with self.db.checkpoints_after():
            job = None
            try:
                job = self.store.create(
                    task=task.name,
                    args_json=args_json,
                    backend=backend,
                    max_attempts=max_attempts or task.max_attempts,
                    timeout=task.timeout,
                    run_at=run_at,
                    request_id=request_id,
                    unique_key=unique_key,
                    handle=handler.new_handle(),
                    job_id=held,
                )
            finally:
                if held is not None and job is None:
                    self.spooler.outbox.release(held)
            if job is None:
                assert unique_key is not None
                existing = self.store.get_by_unique_key(unique_key)
                assert existing is not None  # the key is taken, and records with one are not purged early
                return existing
            if held is not None:
                self.spooler.outbox.add(held)
            else:
                self._submit(job, task, run_at)
        log.info("job %s %s queued on the %s", job.id, job.task, job.backend, extra={"job_id": job.id})
        if not handler.changes_record(job, run_at):
            return job  # as created, queued: reading it back cost 50 us of the enqueue
        try:
            return self.store.get(job.id) or job
        except DATABASE_ERRORS:
            return job  # handed over: it exists and will run, whatever the database says now

    def enqueue_many(
        self,
        task_name: str,
        args_list: Sequence[dict[str, Any] | list[Any] | None],
        *,
        backend: str | None = None,
        max_attempts: int | None = None,
        request_id: str | None = None,
    ) -> builtins.list[Job]:
        """Record one job of ``task_name`` per ``args_list`` item in a single transaction, then
        hand each to its backend (the spooler: a file per ``BATCH_JOBS`` jobs); returns the
        records as created (queued), in order. Cheaper than ``enqueue`` in a loop: one write
        lock and one commit for them all, and on the spooler a file per hundred jobs.

        Raises ``InvalidJob`` (by item index) before recording any job when one is invalid,
        ``UnknownTask``; a job its backend refuses is failed and raises as ``enqueue`` does,
        after the jobs before it were handed over."""
        problems = self.option_problems(
            task=task_name, args=None, backend=backend, delay=None, max_attempts=max_attempts
        )
        args_jsons = []
        for index, args in enumerate(args_list):
            problem = self.option_problems(
                task=task_name, args=args, backend=None, delay=None, max_attempts=None
            ).get("args")
            try:
                args_jsons.append(json.dumps(args if args is not None else {}, allow_nan=False))
            except (TypeError, ValueError) as exc:
                problem = problem or f"must be JSON-serialisable: {exc}"
            if problem:
                problems[f"args[{index}]"] = problem
        if problems:
            raise InvalidJob("the jobs are not valid", problems)
        task = self.registry.get(task_name)
        backend = backend or task.backend
        handler = self.backends[backend]
        with self.db.checkpoints_after():
            jobs = self.store.create_many(
                task=task.name,
                args_jsons=args_jsons,
                backend=backend,
                max_attempts=max_attempts or task.max_attempts,
                timeout=task.timeout,
                request_id=request_id,
                handle=handler.new_handle(),
            )
            if isinstance(handler, SpoolerBackend):
                self._submit_batches(handler, jobs)
            else:
                for job in jobs:
                    self._submit(job, task, None)
        return jobs

    def _reserve(self, handler: Backend, run_at: float | None) -> str | None:
        """The id of a job to hold in the spooler's outbox, to share a spool file with the jobs
        enqueued after it, journaled there before its record is committed; None to hand it over
        at once. Held: in a worker, a request's spooler jobs due now after its first (see
        ``app.jobs.backends.outbox``). The first goes at once, so that a request that enqueues
        one job hands it over before it answers, and a refusal fails it there."""
        if not (self.holds_back and handler is self.spooler and has_request_context()):
            return None
        state = g.get(REQUEST_SPOOLING)
        if state is None:
            setattr(g, REQUEST_SPOOLING, "spooled")
            return None
        if run_at is not None and run_at > time.time():
            return None  # a delayed job has its file now, with its path recorded, for a cancel
        job_id = new_job_id(time.time())
        if not self.spooler.outbox.reserve(job_id):
            return None
        if state != "holding":  # a request that holds none pays for no hook
            setattr(g, REQUEST_SPOOLING, "holding")
            after_this_request(self._flush_held)
        return job_id

    def _flush_held(self, response: Response) -> Response:
        """The end of a request that held jobs back: spool them before its answer goes out."""
        self.spooler.outbox.flush()
        return response

    def _submit_batches(self, spooler: SpoolerBackend, jobs: builtins.list[Job]) -> None:
        """Hand ``jobs`` to the spooler, a file per ``BATCH_JOBS``; if uWSGI refuses a file, its
        jobs and those after it are failed, and ``JobError`` says so."""
        for start in range(0, len(jobs), BATCH_JOBS):
            batch = jobs[start : start + BATCH_JOBS]
            try:
                spooler.submit_batch([job.id for job in batch])
            except JobError as exc:
                for job in jobs[start:]:
                    self._fail_unsubmitted(job, exc)
                raise JobError(f"{exc}; it and the {len(jobs) - start} jobs from it on were failed") from exc

    def option_problems(
        self, *, task: object, args: object, backend: object, delay: object, max_attempts: object
    ) -> dict[str, str]:
        """What is wrong with a job's task name and options, by field: the one rule for Python
        callers and the API. A ``backend`` of None stands for the task's own."""
        details = {}
        if not isinstance(task, str) or not task:
            details["task"] = "required: the name of a registered task (see GET /api/tasks)"
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
        problem = attempts_problem(max_attempts) if max_attempts is not None else None
        if problem:
            details["max_attempts"] = problem
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
            if isinstance(exc, QueueFull):
                raise QueueFull(f"{exc}; the job was recorded as failed") from exc
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
            except DATABASE_ERRORS as error:
                last = error
        log.error("job %s was not handed over and stays queued in the record: %s", job.id, last)

    def get(self, job_id: str) -> Job:
        """The job's record; raises ``JobNotFound``."""
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
        if job.status == JobStatus.CANCELLED:
            return job
        if not self.store.cancel(job_id):
            raise JobConflict(f"job {job_id} is {job.status}: only jobs not yet started can be cancelled")
        handler = self.backends.get(job.backend)
        if handler is not None:
            handler.cancel(job)
        return self.get(job_id)

    def list(
        self,
        *,
        status: JobStatus | None = None,
        task: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> builtins.list[Job]:
        """Job records, newest first (see ``JobStore.list``)."""
        return self.store.list(status=status, task=task, limit=limit, before=before)

    def tasks(self) -> builtins.list[Task]:
        """The registered tasks, by name."""
        return self.registry.all()

    def purge(self, older_than_days: float | None = None) -> int:
        """Delete finished records older than ``older_than_days`` (default JOBS_RETENTION_DAYS);
        returns how many."""
        return self.store.purge(self.settings.purge_cutoff(time.time(), older_than_days))

    @property
    def node(self) -> str:
        """This node's name in the job store: NODE_NAME, or the host name."""
        return owner.node_id()

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """Each run of each node that beat in the last day (or holds jobs): its node, run, host,
        master pid, start, seconds since its last heartbeat and whether that is within NODE_TIMEOUT."""
        now = time.time()
        return [
            {
                "node": row["node"],
                "run": row["run"],
                "host": row["host"],
                "pid": row["pid"],
                "started_at": datetime.fromtimestamp(row["started_at"], UTC).isoformat(timespec="seconds"),
                "beat_age": round(now - row["beat_at"], 3),
                "alive": now - row["beat_at"] < self.settings.node_timeout,
            }
            for row in self.store.nodes()
        ]

    def record_readiness(self) -> None:
        """Commit a write to the job store; raises one of ``DATABASE_ERRORS`` when it cannot take one."""
        self.store.record_readiness()
