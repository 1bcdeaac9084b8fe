"""The job layer's own periodic jobs: purging old records, failing jobs that cannot finish,
and taking over the jobs of dead nodes."""

from __future__ import annotations

import logging
import time
from typing import Any

from app.jobs import owner
from app.jobs.backends.spooler import BATCH_JOBS, SpoolerBackend
from app.jobs.errors import JobError
from app.jobs.extension import Jobs, current_jobs
from app.jobs.periodic import periodic
from app.jobs.states import JobStatus
from app.jobs.store import Job, lost_attempt_error

log = logging.getLogger(__name__)

# Jobs of a dead node read (and spooled) at a time: a backlog of 100,000 moves in 200 steps.
ADOPT_CHUNK = 500
# How long the heartbeat of a run that stopped stays listed (GET /api/stats, Jobs.nodes).
NODE_ROWS_KEPT = 86400


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


@periodic("jobs.reap", every=15, max_attempts=1, per_node=True)
def reap() -> dict[str, int]:
    """Spool the jobs that dead workers held back for a shared spool file (their outbox
    journals), fail this node's jobs that cannot finish (each backend says which are lost:
    their process died, or its run ended with a reload or a restart), take over the jobs of
    the nodes whose heartbeat has expired, and forget the heartbeats of runs dead for a day."""
    jobs = current_jobs()
    spooler = jobs.backends.get("spooler")
    recovered = spooler.outbox.recover() if isinstance(spooler, SpoolerBackend) else 0
    reaped = 0
    for job in jobs.store.reap_candidates(name for name, b in jobs.backends.items() if b.volatile):
        error = lost_error(jobs, job)
        if error is not None:
            reaped += fail_lost(jobs, job, error)
    adopted = 0
    for node in owner.dead_nodes():
        node_reaped, node_adopted = adopt_node(jobs, node)
        reaped += node_reaped
        adopted += node_adopted
    pruned = jobs.store.prune_nodes(time.time() - NODE_ROWS_KEPT)
    return {"reaped": reaped, "adopted": adopted, "nodes_pruned": pruned, "outbox_recovered": recovered}


def lost_error(jobs: Jobs, job: Job) -> dict[str, Any] | None:
    """Why a running or queued job can no longer finish, as its backend judges, or None."""
    backend = jobs.backends.get(job.backend)
    return backend.lost(job) if backend is not None else None


def fail_lost(jobs: Jobs, job: Job, error: dict[str, Any]) -> int:
    """Fail the lost ``job`` with ``error``; 1 if it was, 0 if it moved on meanwhile."""
    if job.status == JobStatus.RUNNING:
        return int(jobs.store.fail_attempt(job, error, retry_at=None))
    return int(jobs.store.fail_unstarted(job.id, error))


def adopt_node(jobs: Jobs, node: str) -> tuple[int, int]:
    """Take over the jobs of the dead ``node``; returns how many were failed and adopted.

    Its running spooler jobs lose their attempt and run again here (or fail, none remaining);
    its waiting spooler jobs are spooled here, due at the same time; its mule and thread jobs,
    whose in-memory handover died with it, fail. A spool file is always written before the
    record moves: a crash between the two leaves a file whose claim adopts the job, never a
    record held by a live node without a file. Of two reapers adopting at once, the
    conditional UPDATEs let one alone move each record; the other's files are skipped as
    stale by their claims.
    """
    spooler = jobs.backends.get("spooler")
    respool = spooler if isinstance(spooler, SpoolerBackend) else None
    failed = adopted = 0
    for job in jobs.store.of_node(node, spooled_waiting=False, limit=ADOPT_CHUNK):
        if job.backend != "spooler" or job.status != JobStatus.RUNNING:
            # Its handover (a mule queue, a thread pool) was in the dead node's memory.
            error = (
                lost_error(jobs, job)
                if job.backend in jobs.backends
                else lost_attempt_error(job, time.time())
            )
            if error is not None:
                failed += fail_lost(jobs, job, error)
            continue
        if job.attempts < job.max_attempts and not _spool(respool, [job]):
            continue
        status = jobs.store.adopt_lost_attempt(job, lost_attempt_error(job, time.time()))
        adopted += status == JobStatus.RETRYING
        failed += status == JobStatus.FAILED
    while respool is not None:
        waiting = jobs.store.of_node(node, spooled_waiting=True, limit=ADOPT_CHUNK)
        if not waiting or not _spool(respool, waiting):
            break
        moved = jobs.store.adopt([job.id for job in waiting], node)
        adopted += moved
        if moved == 0:  # another reaper is moving them
            break
    if failed or adopted:
        log.warning(
            "node %s is dead (no heartbeat): %d of its jobs adopted here, %d failed", node, adopted, failed
        )
    return failed, adopted


def _spool(spooler: SpoolerBackend | None, waiting: list[Job]) -> bool:
    """Write spool files here for ``waiting`` jobs, due when they were (the due ones a file per
    ``BATCH_JOBS``); False, logged, if the spooler refused one: the rest stay with their node."""
    if spooler is None:
        return False
    now = time.time()
    due = [job for job in waiting if job.run_at is None or job.run_at <= now]
    try:
        for start in range(0, len(due), BATCH_JOBS):
            spooler.submit_batch([job.id for job in due[start : start + BATCH_JOBS]])
        for job in waiting:
            if job.run_at is not None and job.run_at > now:
                spooler.submit(job, job.run_at)
    except JobError:
        log.exception("jobs of a dead node not adopted: the spooler refused them")
        return False
    return True
