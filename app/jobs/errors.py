"""Every error of the job layer, in one place: what callers catch, and what the web layer maps
to HTTP answers (``app/web/errors.py``)."""

from __future__ import annotations


class JobError(Exception):
    """Base class of the job layer's errors: a job could not be declared, queued or changed."""


class UnknownTask(JobError):
    """No task is registered under that name."""


class InvalidJob(JobError):
    """The job's arguments or options cannot be accepted; ``details`` maps fields to messages."""

    def __init__(self, message: str, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class JobNotFound(JobError):
    """No job has that id."""


class JobConflict(JobError):
    """The job is not in a state that allows the operation."""


class QueueFull(JobError):
    """The backend cannot take the job now (the mule queue is full)."""


class OutcomeNotRecorded(JobError):
    """An attempt ended, but the database refused its outcome (a full disk, say): the runner
    keeps it and records it when the job comes up again in this process, instead of rerunning."""


class PermanentFailure(Exception):
    """Raised by a task: this failure is final, retrying cannot help. The job fails at once
    with this error, whatever attempts remain (``job(throws=...)`` says the same of a class)."""
