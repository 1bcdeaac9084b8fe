"""The job layer's own periodic jobs: purging old records, and failing jobs that cannot finish."""

from __future__ import annotations

import os
import time
from typing import Any

from app import runtime
from app.jobs.backends.mule import generation
from app.jobs.extension import current_jobs
from app.jobs.periodic import periodic
from app.jobs.store import RUNNING, Job, error_record, lost_attempt_error, process_alive


# Every 10 minutes rather than hourly: a reload restarts uWSGI's timers.
@periodic("jobs.purge", every=600, max_attempts=1)
def purge() -> dict[str, int]:
    """Delete finished job records older than JOBS_RETENTION_DAYS."""
    jobs = current_jobs()
    cutoff = time.time() - jobs.settings.jobs_retention_days * 86400
    return {"purged": jobs.store.purge(cutoff)}


@periodic("jobs.reap", every=15, max_attempts=1)
def reap() -> dict[str, int]:
    """Fail mule and thread jobs whose process died, or whose mule message a reload dropped."""
    store = current_jobs().store
    uwsgi = runtime.uwsgi_module()
    current = generation(uwsgi) if uwsgi is not None else None
    reaped = 0
    for job in store.reap_candidates():
        error = lost_error(job, current)
        if error is None:
            continue
        if job.status == RUNNING:
            reaped += store.fail_attempt(job, error, retry_at=None)
        else:
            reaped += store.fail_unstarted(job.id, error)
    return {"reaped": reaped}


def lost_error(job: Job, mule_generation: str | None) -> dict[str, Any] | None:
    """Why a running or queued job can no longer finish, or None if it still may.

    A job whose spool file exists is left alone: the spooler runs it (again).
    """
    dispatch = job.dispatch or ""
    if os.path.isabs(dispatch) and os.path.exists(dispatch):
        return None
    if job.status == RUNNING:
        if job.pid is None or process_alive(job.pid):
            return None
        return lost_attempt_error(job, time.time())
    if dispatch.startswith("pid:") and not process_alive(int(dispatch[4:])):
        return error_record(
            "WorkerLost", f"process {dispatch[4:]} died before starting the job (thread backend)"
        )
    if dispatch.startswith("mule:") and mule_generation and dispatch != mule_generation:
        return error_record("WorkerLost", "uWSGI reloaded or restarted before a mule read the job's message")
    return None
