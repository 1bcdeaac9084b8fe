"""The job layer without uWSGI: inline (tests) and thread-pool (flask run) execution, the API's
validation and error answers, and the operator CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.jobs import InvalidJob, JobError, Jobs, JobStatus, PermanentFailure, current_jobs, job
from tests.conftest import AppFactory, MakeJob, wait_until

# The job-store suite: each test that builds an app runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_databases


def post_job(client: FlaskClient, **body: object):  # type: ignore[no-untyped-def]
    return client.post("/api/jobs", json=body)


def test_enqueue_answers_202_with_the_record_and_its_location(client: FlaskClient) -> None:
    response = post_job(client, task="diag.sleep", args={"seconds": 0.01})
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/api/jobs/{job['id']}"
    record = client.get(response.headers["Location"]).get_json()
    assert record["status"] == "succeeded"
    assert record["result"] == {"slept": 0.01}
    assert record["progress"] == 1.0


def test_failing_job_is_retried_until_it_succeeds(client: FlaskClient) -> None:
    job = post_job(client, task="diag.fail", args={"times": 2}, max_attempts=3).get_json()
    record = client.get(f"/api/jobs/{job['id']}").get_json()
    assert (record["status"], record["attempts"]) == ("succeeded", 3)


def test_failing_job_fails_after_its_attempts_and_keeps_the_error(client: FlaskClient) -> None:
    job = post_job(client, task="diag.fail", args={"times": 5}, max_attempts=3).get_json()
    record = client.get(f"/api/jobs/{job['id']}").get_json()
    assert (record["status"], record["attempts"]) == ("failed", 3)
    assert record["error"]["type"] == "RuntimeError"
    assert "failing attempt 3" in record["error"]["message"]
    assert "Traceback" in record["error"]["traceback"]


def test_a_failed_job_can_be_retried_by_hand_and_a_succeeded_one_cannot(client: FlaskClient) -> None:
    failed = post_job(client, task="diag.fail", args={"times": 1}, max_attempts=1).get_json()
    again = client.post(f"/api/jobs/{failed['id']}/retry")
    assert again.status_code == 202
    assert client.get(f"/api/jobs/{failed['id']}").get_json()["status"] == "succeeded"
    conflict = client.post(f"/api/jobs/{failed['id']}/retry")
    assert conflict.status_code == 409 and conflict.get_json()["error"] == "conflict"


def test_bad_requests_get_json_errors_never_500(client: FlaskClient) -> None:
    cases = [
        (client.post("/api/jobs", data="{not json", content_type="application/json"), 400),
        (client.post("/api/jobs", data="task=x", content_type="application/x-www-form-urlencoded"), 415),
        (client.post("/api/jobs", json=["a list"]), 400),
        (post_job(client, task="no.such.task"), 404),
        (post_job(client, task="diag.noop", args="x", delay="soon", extra=1), 400),
        (post_job(client, task="diag.noop", max_attempts=0), 400),
        (post_job(client, task="diag.noop", backend="carrier-pigeon"), 400),
        (client.get("/api/jobs/does-not-exist"), 404),
        (client.delete("/api/jobs/does-not-exist"), 404),
        (client.get("/api/jobs?status=sleeping&limit=0"), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.is_json and response.get_json()["message"]
    details = post_job(client, task="diag.noop", args="x", delay="soon", extra=1).get_json()["details"]
    assert set(details) == {"args", "delay", "extra"}


def test_arguments_must_be_json_and_large_ones_work(jobs: Jobs) -> None:
    with pytest.raises(InvalidJob, match="JSON"):
        jobs.enqueue("diag.noop", {"when": object()})
    job = jobs.enqueue("diag.cpu", {"n": 10, "padding": "x" * 200_000})
    record = jobs.get(job.id)
    assert len(record.args["padding"]) == 200_000
    assert record.error is not None and "padding" in record.error["message"]  # diag.cpu takes only n


def test_the_request_id_is_kept_only_when_well_formed(client: FlaskClient, jobs: Jobs) -> None:
    def enqueued_with(request_id: str) -> str:
        answer = client.post("/api/jobs", json={"task": "diag.noop"}, headers={"X-Request-ID": request_id})
        return str(answer.get_json()["id"])

    assert jobs.get(enqueued_with("req-1")).request_id == "req-1"
    assert jobs.get(enqueued_with("x" * 5000)).request_id is None


def test_a_job_not_started_can_be_cancelled_and_a_finished_one_cannot(
    client: FlaskClient, jobs: Jobs, make_job: MakeJob
) -> None:
    waiting = make_job(run_at=time.time() + 60)
    assert waiting.status == "scheduled"
    assert client.delete(f"/api/jobs/{waiting.id}").get_json()["status"] == "cancelled"
    done = jobs.enqueue("diag.noop")
    assert client.delete(f"/api/jobs/{done.id}").status_code == 409


def test_listing_is_newest_first_filtered_and_paginated(client: FlaskClient) -> None:
    ids = [post_job(client, task="diag.noop").get_json()["id"] for _ in range(5)]
    post_job(client, task="diag.pid")
    first = client.get("/api/jobs?task=diag.noop&limit=3").get_json()
    second = client.get(f"/api/jobs?task=diag.noop&limit=3&cursor={first['next_cursor']}").get_json()
    listed = [job["id"] for job in first["jobs"] + second["jobs"]]
    assert listed == list(reversed(ids))
    assert client.get("/api/jobs?status=succeeded&task=diag.pid").get_json()["jobs"][0]["task"] == "diag.pid"


def test_tasks_are_listed_with_their_options(client: FlaskClient) -> None:
    tasks = {task["name"]: task for task in client.get("/api/tasks").get_json()["tasks"]}
    assert {"diag.noop", "diag.sleep", "diag.cpu", "diag.fail", "diag.pid"} <= set(tasks)
    assert tasks["examples.count_page_view"]["backend"] == "mule"
    assert tasks["jobs.purge"]["backend"] == "spooler"


def test_jobs_run_in_a_thread_pool_with_the_app_context_without_uwsgi(
    app_factory: AppFactory,
) -> None:
    with app_factory(JOBS_LOCAL_MODE="threads").app_context():
        jobs = current_jobs()
    job = jobs.enqueue("diag.pid")
    wait_until(lambda: jobs.get(job.id).status == "succeeded", timeout=10, what="the thread pool's job")
    result = jobs.get(job.id).result
    assert result["app"] == "app" and result["thread"].startswith("job")


def test_the_cli_lists_shows_retries_cancels_and_purges(app: Flask, jobs: Jobs, make_job: MakeJob) -> None:
    failed = jobs.enqueue("diag.fail", {"times": 9}, max_attempts=1)
    runner = app.test_cli_runner()
    assert failed.id in runner.invoke(args=["jobs", "list", "--status", "failed"]).output
    assert '"status": "failed"' in runner.invoke(args=["jobs", "show", failed.id]).output
    assert runner.invoke(args=["jobs", "retry", failed.id]).exit_code == 0
    assert runner.invoke(args=["jobs", "cancel", failed.id]).exit_code == 1  # it has run
    later = make_job(run_at=time.time() + 60)
    assert "cancelled" in runner.invoke(args=["jobs", "cancel", later.id]).output
    assert "purged 2 job records" in runner.invoke(args=["jobs", "purge", "--older-than-days", "0"]).output
    assert runner.invoke(args=["jobs", "show", "nope"]).exit_code == 1


@pytest.mark.parametrize("max_attempts", [0, 101, 2.5, True])
def test_the_job_decorator_caps_max_attempts_like_the_api(max_attempts: object) -> None:
    with pytest.raises(JobError, match="max_attempts must be a whole number from 1 to 100"):
        job("tests.local.capped", max_attempts=max_attempts)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("option", "value"),
    [("backoff", -1), ("backoff", "2"), ("max_backoff", -1), ("timeout", 0), ("timeout", -5)],
)
def test_the_job_decorator_refuses_negative_delays_and_timeouts(option: str, value: object) -> None:
    with pytest.raises(JobError, match=option):
        job("tests.local.bad_option", **{option: value})  # type: ignore[arg-type]


class Undeliverable(Exception):
    """What ``tests.local.final_by_class`` raises: final, as its ``throws`` says."""


@job("tests.local.final_by_class", max_attempts=3, backoff=0, throws=(Undeliverable,))
def final_by_class() -> None:
    raise Undeliverable("the receiver does not exist")


@job("tests.local.final_by_raise", max_attempts=3, backoff=0)
def final_by_raise() -> None:
    raise PermanentFailure("this input will never work")


@pytest.mark.parametrize(
    ("task", "error"),
    [("tests.local.final_by_class", "Undeliverable"), ("tests.local.final_by_raise", "PermanentFailure")],
)
def test_a_failure_the_task_says_is_final_fails_the_job_at_once(jobs: Jobs, task: str, error: str) -> None:
    done = jobs.get(jobs.enqueue(task).id)
    assert (done.status, done.attempts, done.max_attempts) == ("failed", 1, 3)
    assert done.error is not None and done.error["type"] == error


def test_tasks_list_the_exceptions_they_treat_as_final(client: FlaskClient) -> None:
    tasks = {task["name"]: task for task in client.get("/api/tasks").get_json()["tasks"]}
    assert tasks["tests.local.final_by_class"]["throws"] == ["Undeliverable"]
    assert tasks["diag.fail"]["throws"] == []


@pytest.mark.parametrize("throws", [ValueError, (ValueError, "KeyError"), [ValueError]])
def test_the_job_decorator_takes_only_a_tuple_of_exception_classes_as_final(throws: object) -> None:
    with pytest.raises(JobError, match="throws must be a tuple of exception classes"):
        job("tests.local.bad_throws", throws=throws)  # type: ignore[arg-type]


def test_an_upload_that_is_not_an_image_fails_at_once_with_the_decoding_error(client: FlaskClient) -> None:
    answer = client.post("/api/examples/thumbnails", data=b"not a png", content_type="image/png")
    assert answer.status_code == 202
    done = client.get(answer.get_json()["job_url"]).get_json()
    assert (done["status"], done["attempts"]) == ("failed", 1)
    assert done["error"]["type"] == "UnidentifiedImageError"


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "http://", "http://[::1/hook", "http://a b/hook"])
def test_a_webhook_to_a_malformed_url_fails_at_once(jobs: Jobs, url: str) -> None:
    done = jobs.get(jobs.enqueue("examples.deliver_webhook", {"url": url, "payload": {}}).id)
    assert (done.status, done.attempts) == ("failed", 1), done.error
    assert done.error is not None and done.error["type"] in ("ValueError", "InvalidURL")


def test_an_api_enqueue_checks_its_options_once(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []
    check = Jobs.option_problems

    def counted(self: Jobs, **fields: object) -> dict[str, str]:
        calls.append(fields)
        return check(self, **fields)

    monkeypatch.setattr(Jobs, "option_problems", counted)
    assert post_job(client, task="diag.noop", delay=0).status_code == 202
    assert len(calls) == 1


def test_the_job_layer_imports_only_the_task_modules_it_is_given(tmp_path: Path) -> None:
    """Without the web layer or the examples: the app tells it what to import."""
    script = f"""
import sys
from flask import Flask
from app.jobs import Jobs
from app.jobs.registry import registry
from app.settings import Settings

settings = Settings.from_env({{"DATA_DIR": {str(tmp_path / "d")!r}, "SPOOL_DIR": {str(tmp_path / "s")!r}}})
Jobs(Flask("bare"), settings, task_modules=["app.jobs.diag"], local_mode="inline")
print(sorted(task.name for task in registry.all() if not task.name.startswith("diag.")))
print(sorted(m for m in sys.modules if m.startswith(("app.web", "app.examples"))))
"""
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["['jobs.purge', 'jobs.reap']", "[]"]


def test_job_states_are_a_type_with_the_strings_of_json_and_sql(jobs: Jobs) -> None:
    done = jobs.get(jobs.enqueue("diag.noop").id)
    assert done.status is JobStatus.SUCCEEDED
    assert jobs.db.read("SELECT status FROM jobs WHERE id = ?", (done.id,))[0][0] == "succeeded"
    assert json.loads(json.dumps(done.to_dict()))["status"] == "succeeded"
