"""Enqueueing many jobs at once: one transaction for their records, then each handed over."""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from flask import Flask

from app.jobs import InvalidJob, JobStatus, current_jobs
from app.jobs.backends.spooler import BATCH_KEY
from tests.conftest import Stack, wait_until

# The job-store suite: each test that builds an app runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_databases


def test_enqueue_many_records_every_job_in_order_and_runs_each(app: Flask) -> None:
    with app.app_context():
        jobs = current_jobs()
        created = jobs.enqueue_many("diag.cpu", [{"n": 3}, {"n": 4}, [5]])
        assert [job.args for job in created] == [{"n": 3}, {"n": 4}, [5]]
        assert all(job.status == JobStatus.QUEUED and job.task == "diag.cpu" for job in created)
        done = [jobs.get(job.id) for job in created]
        assert [job.status for job in done] == [JobStatus.SUCCEEDED] * 3
        assert [job.result["sum"] for job in done] == [5, 14, 30]


def test_enqueue_many_records_nothing_when_one_job_is_invalid(app: Flask) -> None:
    with app.app_context():
        jobs = current_jobs()
        with pytest.raises(InvalidJob) as refused:
            jobs.enqueue_many("diag.noop", [{}, "not an object", {"x": float("nan")}])  # type: ignore[list-item]
        assert set(refused.value.details) == {"args[1]", "args[2]"}
        assert jobs.list(task="diag.noop") == []


def test_a_created_record_is_the_one_a_read_returns(app: Flask) -> None:
    with app.app_context():
        store = current_jobs().store
        created = store.create(
            task="diag.noop",
            args_json='{"a": [1]}',
            backend="spooler",
            max_attempts=2,
            timeout=None,
            run_at=None,
            request_id="r-1",
        )
        assert created is not None and created == store.get(created.id)
        batch = store.create_many(
            task="diag.noop",
            args_jsons=["{}", "[2]"],
            backend="mule",
            max_attempts=1,
            timeout=3.0,
            request_id=None,
        )
        assert batch == [store.get(job.id) for job in batch]


@pytest.mark.integration
def test_a_batch_of_spooler_jobs_all_run_on_the_real_spooler(stack: Stack) -> None:
    answer = stack.post("/api/diag/enqueue?count=200&backend=spooler&batch=true")
    assert answer.status_code == 200, answer.text

    def all_succeeded() -> bool:
        listed = stack.get("/api/jobs?task=diag.noop&status=succeeded&limit=500").json()["jobs"]
        return len(listed) == 200

    wait_until(all_succeeded, timeout=60, what="the 200 batched jobs to succeed")


@pytest.mark.integration
def test_a_batched_job_that_fails_is_retried_on_its_own_and_the_batch_file_goes(stack: Stack) -> None:
    answer = stack.post("/api/diag/enqueue?count=3&task=diag.fail&backend=spooler&batch=true")
    assert answer.status_code == 200, answer.text
    spool = stack.root / "spool"

    def retried() -> bool:
        listed = stack.get("/api/jobs?task=diag.fail&status=succeeded").json()["jobs"]
        return len(listed) == 3

    wait_until(retried, timeout=60, what="the 3 batched diag.fail jobs to succeed on their second attempt")
    listed = stack.get("/api/jobs?task=diag.fail").json()["jobs"]
    assert sorted(job["attempts"] for job in listed) == [2, 2, 2]

    def batch_files() -> list[Path]:
        found = []
        for path in spool.iterdir():
            with contextlib.suppress(OSError):  # a periodic job's file, gone meanwhile
                if path.read_bytes()[4:10] == BATCH_KEY:
                    found.append(path)
        return found

    wait_until(lambda: not batch_files(), timeout=10, what="the batch's spool file to be gone")


@pytest.mark.integration
def test_the_jobs_a_request_enqueues_after_its_first_share_spool_files_and_all_run(stack: Stack) -> None:
    count = 300
    answer = stack.post(f"/api/diag/enqueue?count={count}&task=diag.pid&backend=spooler")
    assert answer.status_code == 200, answer.text

    def all_succeeded() -> bool:
        listed = stack.get("/api/jobs?task=diag.pid&status=succeeded&limit=500").json()["jobs"]
        return len(listed) == count

    wait_until(all_succeeded, timeout=60, what=f"the {count} jobs to succeed")
    # A claim records the spool file that ran the job.
    with contextlib.closing(sqlite3.connect(stack.root / "data" / "app.sqlite3")) as conn:
        rows = conn.execute("SELECT handle FROM jobs WHERE task = 'diag.pid' ORDER BY created_at").fetchall()
    first, *rest = [row[0] for row in rows]
    files = Counter(rest)
    assert first not in files, "the request's first job has a file of its own"
    # Held 5 ms at most, 100 a file: only a machine taking 2.5 ms an enqueue would fail this.
    assert len(files) <= len(rest) / 2, f"{len(files)} spool files for {len(rest)} jobs"
