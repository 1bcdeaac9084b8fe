"""The real stack: nginx in front of a multi-process uWSGI, started as `make run` starts it."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from app.monitoring.uwsgi_stats import read_stats
from app.settings import PROJECT_ROOT
from tests.conftest import Stack, wait_until

pytestmark = pytest.mark.integration


def test_api_info_is_answered_by_several_worker_processes(stack: Stack) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: stack.get("/api/diag/sleep?seconds=0.3"), range(8)))
    assert all(answer.status_code == 200 for answer in answers)
    assert len({answer.json()["pid"] for answer in answers}) >= 2
    info = stack.get("/api/info").json()
    assert info["server"] == "uwsgi" and info["worker_id"] >= 1
    assert info["processes"] == 4 and info["uwsgi_version"].startswith("2.0")


def test_nginx_adds_a_request_id_and_security_headers(stack: Stack) -> None:
    answer = stack.get("/healthz")
    assert len(answer.headers["X-Request-ID"]) == 32
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    passed = stack.get("/healthz", headers={"X-Request-ID": "client-chosen-42"})
    assert passed.headers["X-Request-ID"] == "client-chosen-42"
    enqueued = stack.post("/api/jobs", json={"task": "diag.noop"}, headers={"X-Request-ID": "req-7"})
    assert enqueued.json()["request_id"] == "req-7"


def test_static_files_come_from_nginx_cached_for_an_hour(stack: Stack) -> None:
    answer = stack.get("/static/style.css")
    assert answer.status_code == 200 and "text/css" in answer.headers["Content-Type"]
    # nginx's "expires 1h": Flask's static route would answer "no-cache".
    assert answer.headers["Cache-Control"] == "max-age=3600"


def test_answers_over_a_kilobyte_are_gzipped_by_nginx(stack: Stack) -> None:
    # The task list is over gzip_min_length (1024 bytes), whatever other tests enqueued.
    answer = stack.session.get(
        stack.url("/api/tasks"), headers={"Accept-Encoding": "gzip"}, stream=True, timeout=30
    )
    on_the_wire = answer.raw.read(decode_content=False)
    assert answer.status_code == 200 and answer.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(on_the_wire)
    assert json.loads(body)["tasks"] and len(on_the_wire) < len(body)
    plain = stack.get("/api/tasks", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.content == body


def test_a_body_over_the_limit_gets_413_from_nginx(stack: Stack) -> None:
    answer = stack.post("/api/jobs", data=b"x" * 300_000, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"] == "request_too_large"


def test_sixteen_kilobytes_of_headers_are_served(stack: Stack) -> None:
    headers = {f"X-Large-{i}": "v" * 1000 for i in range(16)}
    answer = stack.get("/api/info", headers=headers)
    assert answer.status_code == 200


def test_stats_server_has_one_entry_per_worker_and_no_request_variables(stack: Stack) -> None:
    stack.get("/api/info", headers={"Cookie": "session=secret-cookie"})
    stats = stack.stats()
    assert len(stats["workers"]) == 4
    assert all(worker["pid"] > 0 for worker in stats["workers"])
    assert "secret-cookie" not in str(stats) and "vars" not in str(stats)
    # uWSGI reads no worker's memory (reload-on-rss would, after every request): the app's
    # stats reader fills it from /proc.
    assert stats["workers"][0]["rss"] == 0
    assert all(worker["rss"] > 0 for worker in read_stats("127.0.0.1", stack.stats_port)["workers"])


def test_threads_started_by_a_request_run_with_the_app_context(stack: Stack) -> None:
    job = stack.enqueue("diag.pid", backend="thread")
    done = stack.wait_for_job(job["id"], ("succeeded", "failed"))
    assert done["status"] == "succeeded"
    worker_pids = {worker["pid"] for worker in stack.stats()["workers"]}
    assert done["result"]["pid"] in worker_pids
    assert done["result"]["app"] == "app" and done["result"]["thread"].startswith("job")


def test_a_request_past_harakiri_is_ended_and_the_worker_replaced(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(HARAKIRI="2", PROCESSES="2")
    before = {worker["pid"] for worker in stack.stats()["workers"]}
    answer = stack.get("/api/diag/sleep?seconds=8", timeout=20)
    assert answer.status_code in (502, 504)

    def replaced() -> bool:
        workers = stack.stats()["workers"]
        return {w["pid"] for w in workers} != before and all(w["pid"] > 0 for w in workers)

    wait_until(replaced, timeout=10, what="the killed worker to be respawned")
    assert sum(worker["harakiri_count"] for worker in stack.stats()["workers"]) >= 1
    assert all(stack.get("/api/info").status_code == 200 for _ in range(6))


def test_sigterm_to_the_master_lets_the_request_in_flight_finish_and_stops_all(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(PROCESSES="2")
    pids = [worker["pid"] for worker in stack.stats()["workers"]] + [stack.master_pid()]
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(stack.get, "/api/diag/sleep?seconds=2")
        wait_until(lambda: any(w["status"] == "busy" for w in stack.stats()["workers"]), 5, "a busy worker")
        started = time.monotonic()
        os.kill(stack.master_pid(), signal.SIGTERM)
        assert in_flight.result().status_code == 200
    assert stack.process is not None
    stack.process.wait(timeout=10)
    assert time.monotonic() - started < 10

    def all_gone() -> bool:
        return not any(os.path.exists(f"/proc/{pid}") for pid in pids)

    wait_until(all_gone, timeout=2, what="every uWSGI process to exit")
    try:
        requests.get(stack.url("/healthz"), timeout=1)
        raise AssertionError("nginx still answers")
    except requests.ConnectionError:
        pass


def test_make_run_says_how_to_install_nginx_when_it_is_missing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.serve"],
        cwd=PROJECT_ROOT,
        env={**os.environ, "NGINX": "/nonexistent/nginx"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "apt-get install nginx" in result.stderr


def test_a_reload_through_the_master_fifo_replaces_workers_without_dropping_requests(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(PROCESSES="2")
    before = {worker["pid"] for worker in stack.stats()["workers"]}
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(stack.get, "/api/diag/sleep?seconds=1.5")
        wait_until(lambda: any(w["status"] == "busy" for w in stack.stats()["workers"]), 5, "a busy worker")
        stack.reload()
        assert in_flight.result().status_code == 200

    def replaced() -> bool:
        try:
            workers = stack.stats()["workers"]
        except OSError:  # the master re-executes itself: its stats server is briefly away
            return False
        return all(w["pid"] > 0 and w["pid"] not in before for w in workers)

    wait_until(replaced, timeout=15, what="every worker to be replaced")
    assert stack.get("/api/info").status_code == 200


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_to_make_run_stops_both_servers_within_ten_seconds(
    make_stack: Callable[..., Stack], signum: int
) -> None:
    stack = make_stack(PROCESSES="2")
    assert stack.process is not None
    children = subprocess.run(
        ["pgrep", "-s", str(stack.master_pid())], capture_output=True, text=True, check=False
    ).stdout.split()
    nginx_pid = int((stack.root / "run" / "nginx" / "nginx.pid").read_text())
    started = time.monotonic()
    stack.process.send_signal(signum)
    assert stack.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    survivors = [pid for pid in [*children, str(nginx_pid)] if os.path.exists(f"/proc/{pid}")]
    assert children and survivors == []
