"""Logs on the real stack: one JSON object per line, and one request id followed from nginx's access
log through the app's lines to every line of the jobs it enqueued, in whichever process ran them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Stack, wait_until

pytestmark = pytest.mark.integration


def json_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The lines that are JSON objects, and the others."""
    objects, others = [], []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            others.append(line)
            continue
        if isinstance(value, dict):
            objects.append(value)
        else:
            others.append(line)
    return objects, others


def test_one_request_id_follows_a_click_from_nginx_to_the_jobs_it_caused(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(PROCESSES="2")
    trace = f"trace-{uuid.uuid4().hex}"
    # A mule job that fails once: its retry runs on the spooler, another process.
    answer = stack.post(
        "/api/jobs",
        json={"task": "diag.fail", "args": {"times": 1}, "backend": "mule"},
        headers={"X-Request-ID": trace},
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["request_id"] == trace
    stack.wait_for_job(job["id"], ("succeeded",))
    wait_until(lambda: "succeeded on attempt 2" in stack.logs(), timeout=10, what="the job's last log line")
    # nginx writes its access log in 64 KB buffers, flushed at least every second.
    access_line = f'"request_id":"{trace}","remote_addr"'
    wait_until(lambda: access_line in stack.logs(), timeout=5, what="nginx's access line")

    objects, _ = json_lines(stack.logs())
    traced = [line for line in objects if line.get("request_id") == trace]
    access = [line for line in traced if "uri" in line]
    assert len(access) == 1 and access[0]["uri"] == "/api/jobs" and access[0]["status"] == 202
    app_lines = [line for line in traced if "logger" in line]
    messages = [line["msg"] for line in app_lines]
    assert any("queued on the mule" in message for message in messages), messages
    assert any("attempt 1 failed" in message for message in messages), messages
    assert any("succeeded on attempt 2" in message for message in messages), messages
    assert all(line["job_id"] == job["id"] for line in app_lines)
    # The request's worker, the mule and the spooler: three processes, one id to grep.
    assert len({line["pid"] for line in app_lines}) == 3
    # Nothing of this request is logged without its id.
    assert not [line for line in objects if job["id"] in line.get("msg", "") and line not in traced]


def test_log_level_warning_keeps_failures_and_drops_each_jobs_routine_lines(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(PROCESSES="2", LOG_LEVEL="WARNING")
    done = stack.enqueue("diag.noop", backend="spooler")
    failed = stack.enqueue("diag.fail", {"times": 5}, backend="mule")
    stack.wait_for_job(done["id"], ("succeeded",))
    stack.wait_for_job(failed["id"], ("failed",), timeout=60)
    # The failure's WARNING line comes seconds after the no-op ended (three attempts, with backoff,
    # through the same log pipe): an INFO line of the no-op would be in the log by then.
    wait_until(
        lambda: f"job {failed['id']} diag.fail failed after" in stack.logs(), timeout=10, what="the failure"
    )
    objects, _ = json_lines(stack.logs())
    app_lines = [line for line in objects if "logger" in line]
    assert {line["level"] for line in app_lines} <= {"WARNING", "ERROR", "CRITICAL"}, app_lines
    assert not [line for line in app_lines if done["id"] in line["msg"]]
    # nginx's access lines and uWSGI's own are not the app's to filter.
    assert any(line.get("source") == "uwsgi" for line in objects)


def test_uwsgi_and_app_lines_are_json_objects_across_a_reload(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(PROCESSES="2")
    stack.reload()
    wait_until(lambda: stack.logs().count("spawned uWSGI worker 2") >= 2, timeout=30, what="the reload")
    stack.enqueue("diag.noop")
    assert stack.get("/no/such/page").status_code == 404
    # uWSGI's 404 line (log-4xx) reaches the log through the master's log pipe, a moment later.
    wait_until(lambda: "GET /no/such/page" in stack.logs(), timeout=10, what="uWSGI's line for the 404")
    log = stack.logs()
    # What the launcher and uWSGI print before the master's loggers start (again on a reload,
    # when the master reads its configuration anew) is plain text.
    after_start = log[log.index("serving on") :].split("\n", 1)[1]
    objects, others = json_lines(after_start)
    before_loggers = ("[uWSGI] getting INI configuration", "[log-encoder] registered")
    assert [line for line in others if not line.startswith(before_loggers)] == []
    uwsgi_lines = [line for line in objects if line.get("source") == "uwsgi"]
    assert any("gracefully" in line["msg"] or "reload" in line["msg"] for line in uwsgi_lines)
    assert all({"time", "msg"} <= line.keys() for line in uwsgi_lines)
    # uWSGI's line for the 404 (log-4xx) starts with "{address space": wrapped, not taken for JSON.
    assert any("GET /no/such/page" in line["msg"] for line in uwsgi_lines)
