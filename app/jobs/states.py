"""The states of a job record: the same strings in SQL, in JSON and on the command line."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    SCHEDULED = "scheduled"  # queued with a delay that has not passed yet
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; the next one is due at ``run_at``
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.RETRYING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
