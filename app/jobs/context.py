"""The job being run in this thread, so that task code can report progress."""

from __future__ import annotations

from collections.abc import Callable
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
