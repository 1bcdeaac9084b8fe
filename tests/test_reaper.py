"""The reaper and the claim: which unfinished jobs can no longer finish, and why.

Owners are node/run/pid: a pid of a previous run (a restarted container reuses small pids)
is gone even when a process with that pid is alive now."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from flask import Flask

from app.jobs import Jobs
from app.jobs import owner as owners
from app.jobs.owner import Owner
from app.jobs.store import Job, Verdict
from tests.conftest import MakeJob, use_real_backends

# The job-store suite: each test that builds an app runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_databases


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def previous_run(pid: int | None = None) -> Owner:
    """A process of an earlier start of the master, whose pid is alive again now."""
    return Owner(owners.node_id(), "1.1700000000", os.getpid() if pid is None else pid)


@pytest.fixture
def jobs(jobs: Jobs, tmp_path: Path) -> Jobs:
    """The app's job layer with the real backends' judgement (the test app runs jobs inline)."""
    return use_real_backends(jobs, None, tmp_path)


def running(jobs: Jobs, job: Job, holder: Owner) -> Job:
    """The job as a process ``holder`` left it: claimed, running."""
    with jobs.db.write() as tx:
        tx.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, owner = ?, pid = ? WHERE id = ?",
            (str(holder), holder.pid, job.id),
        )
    return jobs.get(job.id)


def lost(jobs: Jobs, job: Job) -> dict[str, object] | None:
    from app.jobs.maintenance import lost_error

    return lost_error(jobs, job)


def test_a_thread_job_queued_in_a_dead_process_is_lost(jobs: Jobs, make_job: MakeJob) -> None:
    gone = lost(jobs, make_job(backend="thread", handle=str(owners.here(dead_pid()))))
    assert gone is not None and gone["type"] == "WorkerLost"
    assert lost(jobs, make_job(backend="thread", handle=str(owners.here()))) is None


def test_a_thread_job_queued_before_a_restart_is_lost_though_its_pid_is_alive_again(
    jobs: Jobs, make_job: MakeJob
) -> None:
    gone = lost(jobs, make_job(backend="thread", handle=str(previous_run())))
    assert gone is not None and gone["type"] == "WorkerLost"


def test_a_mule_job_queued_before_a_reload_is_lost(jobs: Jobs, make_job: MakeJob) -> None:
    assert lost(jobs, make_job(backend="mule", handle=str(owners.master()))) is None
    gone = lost(jobs, make_job(backend="mule", handle=str(previous_run())))
    assert gone is not None and "reloaded" in str(gone["message"])


def test_a_running_job_is_lost_only_once_its_process_is_gone(jobs: Jobs, make_job: MakeJob) -> None:
    job = make_job(backend="mule")
    claimed = jobs.store.claim(job.id, allow_rerun=False).job
    assert claimed is not None and claimed.pid == os.getpid()
    assert claimed.holder == owners.here()
    assert lost(jobs, claimed) is None
    dead = running(jobs, job, owners.here(dead_pid()))
    timed_out = Job(**{**dead.__dict__, "deadline": time.time() - 1, "timeout": 2.0})
    gone = lost(jobs, timed_out)
    assert gone is not None and gone["type"] == "TimeoutError"


@pytest.mark.parametrize("backend", ["mule", "thread"])
def test_a_job_running_when_uwsgi_restarted_is_lost_though_its_pid_is_alive_again(
    jobs: Jobs, make_job: MakeJob, backend: str
) -> None:
    job = running(jobs, make_job(backend=backend), previous_run())
    gone = lost(jobs, job)
    assert gone is not None and gone["type"] == "WorkerLost" and "restarted" in str(gone["message"])


def test_a_job_whose_spool_file_exists_is_left_to_the_spooler(
    jobs: Jobs, make_job: MakeJob, tmp_path: Path
) -> None:
    spool_file = tmp_path / "uwsgi_spoolfile_on_test"
    spool_file.write_bytes(b"")
    job = running(jobs, make_job(backend="spooler", handle=str(spool_file)), owners.here(dead_pid()))
    assert lost(jobs, job) is None
    spool_file.unlink()
    assert lost(jobs, job) is not None


def test_the_spooler_reruns_a_job_whose_owner_ran_before_a_restart(jobs: Jobs, make_job: MakeJob) -> None:
    job = running(jobs, make_job(backend="spooler", max_attempts=2), previous_run())
    claim = jobs.store.claim(job.id, allow_rerun=True)
    assert claim.verdict is Verdict.RUN and claim.job is not None
    assert claim.job.attempts == 2 and claim.job.holder == owners.here()
    assert claim.job.error is not None and claim.job.error["type"] == "WorkerLost"


def test_a_job_running_in_another_live_process_of_this_run_is_left_to_it(
    jobs: Jobs, make_job: MakeJob
) -> None:
    sibling = subprocess.Popen(["sleep", "30"])
    try:
        job = running(jobs, make_job(backend="spooler", max_attempts=2), owners.here(sibling.pid))
        assert jobs.store.claim(job.id, allow_rerun=True).verdict is Verdict.BUSY
    finally:
        sibling.kill()
        sibling.wait()


def test_reaping_fails_the_lost_jobs_and_leaves_the_rest(app: Flask, jobs: Jobs, make_job: MakeJob) -> None:
    from app.jobs.maintenance import reap

    gone = make_job(backend="thread", handle=str(owners.here(dead_pid())))
    restarted = running(jobs, make_job(backend="mule"), previous_run())
    alive = make_job(backend="thread", handle=str(owners.here()))
    with app.app_context():
        assert reap() == {"reaped": 2, "adopted": 0, "nodes_pruned": 0, "outbox_recovered": 0}
    assert jobs.get(gone.id).status == "failed"
    assert jobs.get(restarted.id).status == "failed"
    assert jobs.get(alive.id).status == "queued"


def test_cancelling_a_spooled_job_removes_its_spool_file(
    jobs: Jobs, make_job: MakeJob, tmp_path: Path
) -> None:
    spool_file = tmp_path / "uwsgi_spoolfile_on_test"
    spool_file.write_bytes(b"")
    job = make_job(backend="spooler", handle=str(spool_file))
    assert jobs.cancel(job.id).status == "cancelled"
    assert not spool_file.exists()
