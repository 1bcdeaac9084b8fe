"""The job being run in this thread, so that task code can report progress and every log line
written meanwhile can name the job and the request that enqueued it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RunningJob:
    """What a task can know and say about its own run."""

    id: str
    attempt: int
    max_attempts: int
    _report: Callable[[str, float, str | None], None]

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Record how far the job has got, from 0.0 to 1.0, with an optional message."""
        self._report(self.id, min(1.0, max(0.0, float(fraction))), message)


_current: ContextVar[RunningJob | None] = ContextVar("current_job", default=None)


def current_job() -> RunningJob | None:
    """The job this code runs in, or None outside a job."""
    return _current.get()


@dataclass(frozen=True)
class LoggedJob:
    """What the log lines written during a job's run say of it."""

    id: str
    request_id: str | None


_logged: ContextVar[LoggedJob | None] = ContextVar("logged_job", default=None)


def logged_job() -> LoggedJob | None:
    """The job whose run this code is part of (task code and the runner's own lines), or None."""
    return _logged.get()


@contextmanager
def logging_job(job_id: str, request_id: str | None) -> Iterator[None]:
    """Within this block, log lines belong to job ``job_id``, enqueued by ``request_id``."""
    token = _logged.set(LoggedJob(job_id, request_id))
    try:
        yield
    finally:
        _logged.reset(token)
