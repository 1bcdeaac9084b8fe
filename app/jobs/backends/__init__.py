"""Where a job runs: the uWSGI spooler, a mule, a thread of the worker, or inline.

Each backend hands a stored job to its executor (``submit``) and, in the executing process,
runs it through the shared ``Runner``. The choice of backend is the task's; the guarantees are
the backend's: spooler at least once, mule and thread at most once. What differs between them
(what the record's ``handle`` means, when a job handed over is lost, how a cancel reaches the
executor) is answered by the backend alone: a new backend is one module, plus its line in
``Jobs.__init__`` and its name in ``registry.BACKENDS``.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from app.jobs import owner
from app.jobs.states import JobStatus
from app.jobs.store import Job, error_record, lost_attempt_error


class Backend(Protocol):
    name: str
    #: Whether a job handed over but not started can vanish (an in-memory queue): the reaper
    #: then looks at this backend's queued jobs too, not only at running ones.
    volatile: bool

    def new_handle(self) -> str | None:
        """What the record keeps as its ``handle`` before the handover: what ``lost`` needs to
        tell whether the handover still holds. Only this backend reads it."""

    def changes_record(self, job: Job, at: float | None) -> bool:
        """Whether ``submit(job, at)`` may leave the job's record other than as created (a path
        written, the job already started): ``enqueue`` then reads the record back."""

    def submit(self, job: Job, at: float | None = None) -> None:
        """Hand ``job`` over to run no earlier than ``at``; raises ``JobError`` if it can't.
        Once the executor has the job, a failure to record more of it must not raise."""

    def lost(self, job: Job) -> dict[str, Any] | None:
        """Why ``job`` (running, or queued on a volatile backend) can no longer finish, as the
        record's error, or None if it still may."""

    def cancel(self, job: Job) -> None:
        """Drop the executor's copy of ``job``, which has just been cancelled before it started."""


def lost_with_owner(job: Job, gone: str) -> dict[str, Any] | None:
    """``Backend.lost`` for a backend whose handle is the ``Owner`` holding the queued job in
    memory: lost once that owner, or the running attempt's, is gone; ``gone`` says how."""
    if job.status == JobStatus.RUNNING:
        return None if owner.alive(job.holder) else lost_attempt_error(job, time.time())
    holder = owner.Owner.parse(job.handle)
    if owner.alive(holder):
        return None
    if holder is not None and holder.node != owner.node_id():
        gone = f"node {holder.node} stopped beating (no heartbeat for {owner.heartbeat_timeout():g} s)"
    return error_record("WorkerLost", f"{gone} ({holder or 'an older version'}) before the job started")
