"""The reaper: which unfinished jobs can no longer finish, and why."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from flask import Flask

from app.jobs import Jobs
from app.jobs.maintenance import lost_error
from app.jobs.store import Job


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def record(app: Flask, backend: str, dispatch: str | None) -> Job:
    jobs: Jobs = app.extensions["jobs"]
    job = jobs.store.create(
        task="diag.noop",
        args_json="{}",
        backend=backend,
        max_attempts=1,
        timeout=None,
        run_at=None,
        request_id=None,
        dispatch=dispatch,
    )
    assert job is not None
    return job


def test_a_thread_job_queued_in_a_dead_process_is_lost(app: Flask) -> None:
    job = record(app, "thread", f"pid:{dead_pid()}")
    error = lost_error(job, None)
    assert error is not None and error["type"] == "WorkerLost"
    assert lost_error(record(app, "thread", f"pid:{os.getpid()}"), None) is None


def test_a_mule_job_queued_before_a_reload_is_lost(app: Flask) -> None:
    job = record(app, "mule", "mule:100:1700000000")
    assert lost_error(job, "mule:100:1700000000") is None
    error = lost_error(job, "mule:100:1700009999")
    assert error is not None and "reloaded" in error["message"]


def test_a_running_job_is_lost_only_once_its_process_is_gone(app: Flask) -> None:
    jobs: Jobs = app.extensions["jobs"]
    job = record(app, "mule", None)
    running = jobs.store.claim(job.id, allow_rerun=False).job
    assert running is not None and running.pid == os.getpid()
    assert lost_error(running, None) is None
    dead = Job(**{**running.__dict__, "pid": dead_pid(), "deadline": time.time() - 1, "timeout": 2.0})
    error = lost_error(dead, None)
    assert error is not None and error["type"] == "TimeoutError"


def test_a_job_whose_spool_file_exists_is_left_to_the_spooler(app: Flask, tmp_path: Path) -> None:
    spool_file = tmp_path / "uwsgi_spoolfile_on_test"
    spool_file.write_bytes(b"")
    jobs: Jobs = app.extensions["jobs"]
    job = record(app, "spooler", str(spool_file))
    running = jobs.store.claim(job.id, allow_rerun=True).job
    assert running is not None
    gone = Job(**{**running.__dict__, "pid": dead_pid()})
    assert lost_error(gone, None) is None
    spool_file.unlink()
    assert lost_error(gone, None) is not None


def test_reaping_fails_the_lost_jobs_and_leaves_the_rest(app: Flask) -> None:
    from app.jobs.maintenance import reap

    lost = record(app, "thread", f"pid:{dead_pid()}")
    alive = record(app, "thread", f"pid:{os.getpid()}")
    with app.app_context():
        assert reap() == {"reaped": 1}
    jobs: Jobs = app.extensions["jobs"]
    assert jobs.get(lost.id).status == "failed"
    assert jobs.get(alive.id).status == "queued"
