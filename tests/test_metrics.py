"""GET /metrics and GET /api/stats on the real stack: the whole stack's figures, whichever worker
answers, accepted by promtool, counters that never go backwards, and what a scrape costs."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from app.settings import PROJECT_ROOT
from tests.conftest import Stack, require, wait_until

pytestmark = pytest.mark.integration

CounterValues = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(stack: Stack) -> str:
    answer = stack.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return answer.text


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of an exposition, by sample name."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def counters(text: str) -> CounterValues:
    """Every counter sample and histogram count, by name and labels."""
    values: CounterValues = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count", "_bucket", "_sum")):
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(value for have, value in found.get(name, []) if labels.items() <= have.items())


def promtool_accepts(text: str) -> None:
    require("promtool (Debian's prometheus package)", shutil.which("promtool") is not None)
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_metrics_cover_workers_spoolers_mules_jobs_and_requests_and_pass_promtool(stack: Stack) -> None:
    retried = stack.enqueue("diag.fail", {"times": 1})
    on_mule = stack.enqueue("diag.pid", backend="mule")
    failed = stack.enqueue("diag.fail", {"times": 5}, max_attempts=1)
    for job in (retried, on_mule):
        stack.wait_for_job(job["id"], ("succeeded",))
    stack.wait_for_job(failed["id"], ("failed",))
    assert stack.get("/api/jobs/no-such-job").status_code == 404

    text = scrape(stack)
    promtool_accepts(text)
    found = samples(text)
    assert total(found, "uwsgi_up") == 1
    workers = {labels["worker"] for labels, _ in found["uwsgi_worker_busy"]}
    assert workers == {"1", "2", "3", "4"}
    for name in (
        "uwsgi_worker_requests_total",
        "uwsgi_worker_exceptions_total",
        "uwsgi_worker_harakiri_total",
        "uwsgi_worker_respawns_total",
        "uwsgi_worker_rss_bytes",
        "uwsgi_worker_avg_response_time_seconds",
    ):
        assert {labels["worker"] for labels, _ in found[name]} == workers, name
    assert total(found, "uwsgi_worker_busy") >= 1  # the worker answering this scrape
    assert total(found, "uwsgi_worker_requests_total") >= 5
    assert "uwsgi_listen_queue" in found and "uwsgi_listen_queue_overflows_total" in found
    assert len(found["uwsgi_spooler_running_jobs"]) == 2  # SPOOLER_PROCESSES' default
    assert "uwsgi_spooler_pending_jobs" in found and "uwsgi_spooler_scheduled_jobs" in found
    assert total(found, "uwsgi_mules_alive") == total(found, "uwsgi_mules_configured") == 1
    assert total(found, "mule_messages_total") >= 1
    assert "uwsgi_mule_queued_jobs" in found
    assert total(found, "jobs_records", task="diag.fail", state="succeeded") >= 1
    assert total(found, "jobs_records", task="diag.fail", state="failed") >= 1
    assert total(found, "jobs_finished_total", task="diag.fail", status="failed") >= 1
    assert total(found, "jobs_finished_total", task="diag.pid", backend="mule", status="succeeded") >= 1
    assert total(found, "jobs_retries_total", task="diag.fail") >= 1
    assert total(found, "job_duration_seconds_count", task="diag.fail", backend="spooler") >= 3
    assert total(found, "job_queue_wait_seconds_count", task="diag.pid", backend="mule") >= 1
    # Routes, never raw paths: the 404 above counts under its route with the job id left out.
    assert total(found, "http_requests_total", endpoint="/api/jobs/<job_id>", status="404") >= 1
    assert not any("no-such-job" in labels.get("endpoint", "") for labels, _ in found["http_requests_total"])
    assert total(found, "http_request_duration_seconds_count", endpoint="/api/jobs") >= 3


def test_metrics_and_stats_are_for_operators_only(stack: Stack) -> None:
    for path in ("/metrics", "/api/stats"):
        answer = requests.get(stack.url(path), timeout=10)
        assert answer.status_code == 401, path
        assert answer.json()["error"] == "unauthorized"


def test_stats_api_shows_workers_spool_mules_and_jobs_without_secrets(stack: Stack) -> None:
    answer = stack.get("/api/stats", headers={"Cookie": "session=secret-cookie"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["uwsgi"]["workers"]) == 4
    assert {"id", "pid", "status", "requests", "rss", "avg_rt", "harakiri_count"} <= body["uwsgi"]["workers"][
        0
    ].keys()
    assert len(body["uwsgi"]["spoolers"]) == 2
    assert body["mules"]["configured"] == body["mules"]["alive"] == 1
    assert {"pending", "scheduled", "running"} <= body["spool"].keys()
    assert {"requests", "jobs_succeeded", "jobs_failed"} <= body["totals"].keys()
    assert isinstance(body["jobs"], dict)
    raw = answer.text
    for secret in ("secret-cookie", "Bearer", "OPERATOR_TOKEN", "cwd", "uwsgi.ini", "vars"):
        assert secret not in raw, secret


@pytest.mark.faults
def test_counters_never_go_backwards_across_workers_and_a_graceful_reload(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    stack = make_stack(PROCESSES="3")
    for _ in range(3):
        stack.enqueue("diag.fail", {"times": 1})
    previous = counters(scrape(stack))
    scrapes = decreases = 0
    checked: list[str] = []

    def compare(text: str) -> None:
        nonlocal previous, scrapes, decreases
        now = counters(text)
        scrapes += 1
        for key, value in previous.items():
            if now.get(key, 0.0) < value:
                decreases += 1
                checked.append(f"{key}: {value} -> {now.get(key)}")
        previous = now

    for _ in range(30):
        stack.get("/api/info")
        compare(scrape(stack))
    before_reload = previous
    master = stack.master_pid()
    stack.reload()
    wait_until(lambda: stack_answers(stack), timeout=30, what="the stack to answer after the reload")
    for _ in range(15):
        compare(scrape(stack))
    assert stack.master_pid() == master  # a graceful reload, not a new stack
    assert decreases == 0, checked
    requests_before = sum(
        v for (name, _), v in before_reload.items() if name == "uwsgi_worker_requests_total"
    )
    requests_after = sum(v for (name, _), v in previous.items() if name == "uwsgi_worker_requests_total")
    assert requests_after > requests_before
    figure(f"scrapes={scrapes} reloads=1 counters={len(previous)} decreases={decreases}")


def all_replaced(stack: Stack, old: frozenset[int]) -> bool:
    """Whether the stack answers with none of the ``old`` worker pids left."""
    return stack_answers(stack) and not old & {w["pid"] for w in stack.stats()["workers"]}


def stack_answers(stack: Stack) -> bool:
    try:
        return stack.get("/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def spool_packet(job_id: str) -> bytes:
    """A spool file as uWSGI writes one: a uwsgi packet of u16-length-prefixed keys and values."""
    body = b""
    for key, value in ((b"job", job_id.encode()),):
        body += struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
    return struct.pack("<BHB", 17, len(body), 0) + body


@pytest.mark.faults
def test_a_scrape_of_100k_job_records_and_10k_spool_files_stays_cheap(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    # One spooler process, held by a long job: the spool files below stay pending, as in a backlog.
    stack = make_stack(SPOOLER_PROCESSES="1")
    holder = stack.enqueue("diag.sleep", {"seconds": 120})
    stack.wait_for_job(holder["id"], ("running",))
    spool = stack.root / "spool"
    now = time.time()
    for n in range(10_000):
        path = spool / f"uwsgi_spoolfile_on_bench_{n}"
        path.write_bytes(spool_packet(uuid.uuid4().hex))
        os.utime(path, (now - 1, now - 1))
    tasks = [f"bench.task{n}" for n in range(10)]
    states = ["succeeded"] * 8 + ["failed", "queued"]
    rows = [
        (uuid.uuid4().hex, tasks[n % 10], "{}", "spooler", states[n % 10], 1, now - n, now - n)
        for n in range(100_000)
    ]
    with sqlite3.connect(Path(stack.root / "data" / "app.sqlite3"), timeout=30) as conn:
        conn.executemany(
            "INSERT INTO jobs (id, task, args, backend, status, max_attempts, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    times = []
    for _ in range(7):
        started = time.perf_counter()
        text = scrape(stack)
        times.append(time.perf_counter() - started)
    found = samples(text)
    assert total(found, "uwsgi_spooler_pending_jobs") >= 10_000
    assert total(found, "jobs_records", state="succeeded") >= 80_000
    assert total(found, "jobs_records") >= 100_000
    median = statistics.median(times)
    figure(
        f"records=100000 spool_files=10000 scrapes={len(times)} median_ms={median * 1000:.1f} "
        f"max_ms={max(times) * 1000:.1f}"
    )


@pytest.mark.faults
def test_respawned_workers_continue_their_slots_metrics_files(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    stack = make_stack(PROCESSES="2")
    pids: set[int] = set()
    sent = 0
    for _ in range(3):  # two graceful reloads: every worker and mule replaced twice
        pids |= {w["pid"] for w in stack.stats()["workers"]}
        for _ in range(20):
            assert stack.get("/api/info").status_code == 200
            sent += 1
        stack.enqueue("diag.pid", backend="mule")
        if len(pids) < 6:
            stack.reload()
            wait_until(partial(all_replaced, stack, frozenset(pids)), 30, "new workers after the reload")
    found = samples(scrape(stack))
    # Every request counted, whichever process of the slot served it...
    assert total(found, "http_requests_total", endpoint="/api/info") == sent
    # ...in one set of files per worker or mule slot, not one per process that ever held it.
    files = sorted(path.name for path in (stack.root / "run" / "metrics").glob("*.db"))
    assert not [name for name in files if any(name.endswith(f"_{pid}.db") for pid in pids)], files
    assert {"counter_worker1.db", "counter_worker2.db", "counter_mule1.db"} <= set(files)
    figure(f"requests={sent} reloads=2 worker_pids={len(pids)} metrics_files={len(files)}")


def test_the_app_answers_when_started_without_the_launcher_that_made_its_metrics_directory(
    tmp_path: Path,
) -> None:
    # uWSGI started another way (by hand, by a process manager) gets the same environment but no
    # launcher to create RUN_DIR/metrics: once, every request answered 500 for want of it.
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "RUN_DIR": str(tmp_path / "run"),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "run" / "metrics"),
    }
    code = "from app.wsgi import app; print(app.test_client().get('/healthz').status_code)"
    answer = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert answer.stdout.strip() == "200", answer.stderr[-2000:]


def test_every_sample_is_labelled_with_the_replica_that_answered(client: FlaskClient) -> None:
    # Behind one nginx each scrape reaches one replica: its series must stay apart from the others'.
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    samples = [s for f in text_string_to_metric_families(answer.text) for s in f.samples]
    assert samples
    assert {sample.labels.get("replica") for sample in samples} == {socket.gethostname()}
