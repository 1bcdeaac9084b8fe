"""The job layer: declare tasks, enqueue them, run them on the spooler, a mule or a thread.

It depends on Flask (jobs run in the app context) and never on the web layer.
"""

from app.jobs.backends import QueueFull
from app.jobs.context import current_job
from app.jobs.extension import JobConflict, JobNotFound, Jobs, current_jobs
from app.jobs.periodic import periodic
from app.jobs.registry import InvalidJob, JobError, UnknownTask, job

__all__ = [
    "InvalidJob",
    "JobConflict",
    "JobError",
    "JobNotFound",
    "Jobs",
    "QueueFull",
    "UnknownTask",
    "current_job",
    "current_jobs",
    "job",
    "periodic",
]
