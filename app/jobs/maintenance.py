"""The job layer's own periodic jobs: purging old records and failing jobs whose process died."""

from __future__ import annotations

import os
import time

from flask import current_app

from app.jobs.periodic import periodic
from app.jobs.store import Job

LOST_GRACE = 5.0


@periodic("jobs.purge", every=3600, max_attempts=1)
def purge() -> dict[str, int]:
    """Delete finished job records older than JOBS_RETENTION_DAYS."""
    jobs = current_app.extensions["jobs"]
    cutoff = time.time() - jobs.settings.jobs_retention_days * 86400
    return {"purged": jobs.store.purge(cutoff)}


@periodic("jobs.reap", every=15, max_attempts=1)
def reap() -> dict[str, int]:
    """Fail running mule and thread jobs whose process died or whose timeout has long passed."""
    jobs = current_app.extensions["jobs"]
    reaped = 0
    for job in jobs.store.running_jobs():
        error = lost_error(job, time.time())
        if error is not None and jobs.store.mark_lost(job, error):
            reaped += 1
    return {"reaped": reaped}


def lost_error(job: Job, now: float) -> dict[str, str | None] | None:
    """Why a running job can no longer finish, or None if it still may.

    Spooler jobs are left alone while their file exists: the spooler runs it again.
    """
    if job.backend == "spooler" and job.dispatch and os.path.exists(job.dispatch):
        return None
    if job.deadline is not None and now > job.deadline + LOST_GRACE:
        return {
            "type": "TimeoutError",
            "message": f"attempt {job.attempts} ran past its {job.timeout:g} s timeout",
            "traceback": None,
        }
    if job.pid is not None and not _alive(job.pid):
        return {
            "type": "WorkerLost",
            "message": f"attempt {job.attempts}: process {job.pid} died before the job finished",
            "traceback": None,
        }
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
