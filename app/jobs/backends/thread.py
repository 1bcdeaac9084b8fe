"""Threads: a pool inside the process that enqueued the job (a uWSGI worker, or `flask run`).

No process to start and nothing to serialise beyond JSON, but the job dies with its process
(a worker recycled or reloaded), and its timeout is recorded, not enforced: Python cannot
stop a thread. Also the executor for everything when the app runs without uWSGI.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from app.jobs import owner
from app.jobs.backends import Backend, lost_with_owner
from app.jobs.runner import Runner
from app.jobs.store import Job

log = logging.getLogger(__name__)

# Jobs one process runs at once; more wait in the pool's queue.
POOL_THREADS = 4


class DaemonPool:
    """Threads that never hold up their process's exit. ThreadPoolExecutor's threads are joined
    when the interpreter exits, so one running job kept a reloading worker alive until uWSGI's
    mercy kill, and every request waited; a thread job dies with its worker anyway."""

    def __init__(self, threads: int) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        for number in range(threads):
            threading.Thread(target=self._work, name=f"job-{number}", daemon=True).start()

    def submit(self, call: Callable[[], None]) -> None:
        self._queue.put(call)

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            try:
                call()
            except Exception:  # a pool thread must outlive any one job
                log.exception("thread job raised")


class ThreadBackend:
    name = "thread"
    volatile = True

    def __init__(self, runner: Runner, later: Backend | None = None) -> None:
        self.runner = runner
        self.later = later
        self._pool: DaemonPool | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _executor(self) -> DaemonPool:
        # A pool made before a fork has no threads in the child: make one per process.
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = DaemonPool(POOL_THREADS)
                self._pid = os.getpid()
            return self._pool

    def new_handle(self) -> str:
        """This process: its pool holds the job until a thread takes it."""
        return str(owner.here())

    def lost(self, job: Job) -> dict[str, Any] | None:
        return lost_with_owner(job, "the process that queued the job in its thread pool ended")

    def cancel(self, job: Job) -> None:
        """Nothing to drop: the pool skips a cancelled job."""

    def changes_record(self, job: Job, at: float | None) -> bool:
        """A thread of the pool may start the job before ``submit`` returns."""
        return True

    def submit(self, job: Job, at: float | None = None) -> None:
        """Run the job in this process's pool; a delay or a retry waits on the spooler when
        there is one (no thread held meanwhile), else on a timer thread."""
        delay = 0.0 if at is None else at - time.time()
        if delay > 0 and self.later is not None:
            self.later.submit(job, at)
        elif delay > 0:
            timer = threading.Timer(delay, self._start, args=(job.id,))
            timer.daemon = True
            timer.start()
        else:
            self._start(job.id)

    def _start(self, job_id: str) -> None:
        self._executor().submit(lambda: self._run(job_id))

    def _run(self, job_id: str) -> None:
        self.runner.run_once(job_id, retries=self)


class InlineBackend:
    """Runs the job at once in the caller, retries back to back: for tests."""

    name = "inline"
    volatile = False

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def new_handle(self) -> None:
        return None

    def lost(self, job: Job) -> dict[str, Any] | None:
        """Never: the job ran to its end before ``submit`` returned."""
        return None

    def cancel(self, job: Job) -> None:
        """Nothing to drop: an inline job is never waiting."""

    def changes_record(self, job: Job, at: float | None) -> bool:
        """The job has run by the time ``submit`` returns."""
        return True

    def submit(self, job: Job, at: float | None = None) -> None:
        while self.runner.run(job.id, allow_rerun=False).retry_at is not None:
            pass
