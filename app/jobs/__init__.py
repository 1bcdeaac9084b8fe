"""The job layer: declare tasks, enqueue them, run them on the spooler, a mule or a thread.

It depends on Flask (jobs run in the app context) and never on the web layer; the app tells it
which modules declare tasks, and the caller gives it the request id to record.
"""

from app.jobs.context import current_job
from app.jobs.errors import (
    InvalidJob,
    JobConflict,
    JobError,
    JobNotFound,
    PermanentFailure,
    QueueFull,
    UnknownTask,
)
from app.jobs.extension import Jobs, current_jobs
from app.jobs.periodic import periodic
from app.jobs.registry import job
from app.jobs.states import JobStatus

__all__ = [
    "InvalidJob",
    "JobConflict",
    "JobError",
    "JobNotFound",
    "JobStatus",
    "Jobs",
    "PermanentFailure",
    "QueueFull",
    "UnknownTask",
    "current_job",
    "current_jobs",
    "job",
    "periodic",
]
