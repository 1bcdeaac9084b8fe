"""The job layer's own periodic jobs: purging old records, and failing jobs that cannot finish."""

from __future__ import annotations

from typing import Any

from app.jobs.extension import Jobs, current_jobs
from app.jobs.periodic import periodic
from app.jobs.states import JobStatus
from app.jobs.store import Job


# Every 10 minutes rather than hourly: a reload restarts uWSGI's timers.
@periodic("jobs.purge", every=600, max_attempts=1)
def purge() -> dict[str, int]:
    """Delete finished job records older than JOBS_RETENTION_DAYS, then give the WAL's space
    back to the disk (a checkpoint that truncates it)."""
    jobs = current_jobs()
    purged = jobs.purge()
    # 1 when a reader held the WAL back: it is truncated on a later run.
    blocked, _, _ = jobs.db.checkpoint()
    return {"purged": purged, "wal_checkpoint_blocked": blocked}


@periodic("jobs.reap", every=15, max_attempts=1)
def reap() -> dict[str, int]:
    """Fail the jobs that can no longer finish: each backend says which of its jobs are lost
    (their process died, or its run ended with a reload or a restart)."""
    jobs = current_jobs()
    reaped = 0
    for job in jobs.store.reap_candidates(name for name, b in jobs.backends.items() if b.volatile):
        error = lost_error(jobs, job)
        if error is None:
            continue
        if job.status == JobStatus.RUNNING:
            reaped += jobs.store.fail_attempt(job, error, retry_at=None)
        else:
            reaped += jobs.store.fail_unstarted(job.id, error)
    return {"reaped": reaped}


def lost_error(jobs: Jobs, job: Job) -> dict[str, Any] | None:
    """Why a running or queued job can no longer finish, as its backend judges, or None."""
    backend = jobs.backends.get(job.backend)
    return backend.lost(job) if backend is not None else None
