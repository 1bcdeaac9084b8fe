"""Where a job runs: the uWSGI spooler, a mule, a thread of the worker, or inline.

Each backend hands a stored job to its executor (``submit``) and, in the executing process,
runs it through the shared ``Runner``. The choice of backend is the task's; the guarantees are
the backend's: spooler at least once, mule and thread at most once.
"""

from __future__ import annotations

from typing import Protocol

from app.jobs.registry import JobError
from app.jobs.store import Job


class QueueFull(JobError):
    """The backend cannot take the job now (the mule queue is full)."""


class Backend(Protocol):
    name: str

    def tag(self) -> str | None:
        """What the record keeps as its ``dispatch`` before the handover, so that the reaper
        can tell a handover that was lost (its process died, or the mules' queue with a reload)."""

    def submit(self, job: Job, at: float | None = None) -> None:
        """Hand ``job`` over to run no earlier than ``at``; raises ``JobError`` if it can't."""
