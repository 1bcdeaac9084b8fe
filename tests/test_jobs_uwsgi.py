"""Background jobs on the real uWSGI spooler and mules, through nginx."""

from __future__ import annotations

import http.server
import os
import re
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Stack, free_port, wait_until

pytestmark = pytest.mark.integration
FINISHED = ("succeeded", "failed", "cancelled")


def test_a_spooler_job_runs_and_reports_progress(stack: Stack) -> None:
    job = stack.enqueue("diag.sleep", {"seconds": 0.5})
    # An idle spooler is woken at once: the answer may already find the job running.
    assert job["status"] in ("queued", "running") and job["backend"] == "spooler"
    done = stack.wait_for_job(job["id"], FINISHED)
    assert (done["status"], done["attempts"], done["progress"]) == ("succeeded", 1, 1.0)
    spooler_pids = {spooler["pid"] for spooler in stack.stats()["spoolers"]}
    assert done["pid"] in spooler_pids
    in_context = stack.wait_for_job(stack.enqueue("diag.pid")["id"], FINISHED)["result"]
    assert in_context["app"] == "app" and in_context["pid"] in spooler_pids


def test_arguments_over_64_kb_reach_the_spooler(stack: Stack) -> None:
    job = stack.enqueue("fixture.size", {"blob": "x" * 100_000})
    done = stack.wait_for_job(job["id"], FINISHED)
    assert (done["status"], done["result"]) == ("succeeded", 100_000)


def test_retries_succeed_within_max_attempts_and_fail_beyond(stack: Stack) -> None:
    recovers = stack.enqueue("diag.fail", {"times": 2}, max_attempts=3)
    gives_up = stack.enqueue("diag.fail", {"times": 5}, max_attempts=3)
    recovered = stack.wait_for_job(recovers["id"], ("succeeded", "failed"))
    failed = stack.wait_for_job(gives_up["id"], ("succeeded", "failed"))
    assert (recovered["status"], recovered["attempts"]) == ("succeeded", 3)
    assert (failed["status"], failed["attempts"]) == ("failed", 3)
    assert failed["error"]["type"] == "RuntimeError"
    retried = stack.post(f"/api/jobs/{gives_up['id']}/retry")
    assert retried.status_code == 202
    assert stack.post(f"/api/jobs/{recovers['id']}/retry").status_code == 409


def test_a_delayed_job_waits_its_delay_then_runs(stack: Stack) -> None:
    job = stack.enqueue("diag.noop", delay=2)
    assert job["status"] == "scheduled"
    assert stack.job(job["id"])["status"] == "scheduled"
    done = stack.wait_for_job(job["id"], FINISHED)
    created = _epoch(done["created_at"])
    started = _epoch(done["started_at"])
    assert done["status"] == "succeeded" and 1.9 <= started - created <= 4.5


def test_cancelling_a_scheduled_job_removes_it_and_a_started_one_is_refused(stack: Stack) -> None:
    job = stack.enqueue("diag.noop", delay=30)
    cancelled = stack.session.delete(stack.url(f"/api/jobs/{job['id']}"), timeout=10)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    done = stack.enqueue("diag.noop")
    stack.wait_for_job(done["id"], FINISHED)
    assert stack.session.delete(stack.url(f"/api/jobs/{done['id']}"), timeout=10).status_code == 409


def test_an_outsider_without_the_token_is_refused(stack: Stack) -> None:
    import requests

    answer = requests.post(stack.url("/api/jobs"), json={"task": "diag.noop"}, timeout=10)
    assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"


def test_a_spooler_killed_mid_job_runs_it_again(stack: Stack) -> None:
    job = stack.enqueue("diag.sleep", {"seconds": 3}, max_attempts=2)
    running = stack.wait_for_job(job["id"], ("running",))
    os.kill(running["pid"], signal.SIGKILL)
    done = stack.wait_for_job(job["id"], FINISHED, timeout=30)
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert done["error"]["type"] == "WorkerLost"


def test_queued_jobs_survive_a_full_restart(make_stack: Callable[..., Stack], tmp_path: Path) -> None:
    root = Path(os.path.realpath(tmp_path))
    first = make_stack(root=root)
    ids = [first.enqueue("diag.noop", delay=2)["id"] for _ in range(100)]
    first.stop()
    second = make_stack(root=root)
    for job_id in ids:
        assert second.wait_for_job(job_id, FINISHED, timeout=60)["status"] == "succeeded"


def test_a_periodic_job_runs_once_per_period_with_four_workers(stack: Stack) -> None:
    ticks = Path(stack.env["DATA_DIR"]) / "ticks.log"
    wait_until(ticks.exists, timeout=10, what="the first tick")
    first = len(ticks.read_text().splitlines())

    def succeeded() -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        cursor = ""
        while True:
            page = stack.get(f"/api/jobs?task=fixture.tick&status=succeeded&limit=200{cursor}").json()
            jobs += page["jobs"]
            if not page["next_cursor"]:
                return jobs
            cursor = f"&cursor={page['next_cursor']}"

    found: dict[str, Any] = {}

    def settled() -> bool:
        # Every tick line (one per run) has its own record (one per period, by its unique key).
        found["lines"] = len(ticks.read_text().splitlines())
        found["jobs"] = succeeded()
        return found["lines"] >= first + 5 and found["lines"] == len(found["jobs"])

    wait_until(settled, timeout=30, what=f"five more ticks, each its own job (last: {found.get('lines')})")
    assert all(job["attempts"] == 1 for job in found["jobs"]), "a period's job ran twice"
    assert {job["backend"] for job in found["jobs"]} == {"spooler"}


def test_many_workers_and_threads_enqueueing_at_once_record_every_job_once(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(PROCESSES="8", THREADS="4", SPOOLER_PROCESSES="2")

    def burst(_: int) -> list[str]:
        return [stack.enqueue("diag.noop")["id"] for _ in range(10)]

    with ThreadPoolExecutor(32) as pool:
        ids = [job_id for batch in pool.map(burst, range(32)) for job_id in batch]
    assert len(set(ids)) == 320
    listed: list[str] = []
    cursor = ""
    while True:
        page = stack.get(f"/api/jobs?task=diag.noop&limit=500{cursor}").json()
        listed += [job["id"] for job in page["jobs"]]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(listed) == sorted(ids)
    for job_id in ids[-5:]:
        assert stack.wait_for_job(job_id, FINISHED)["status"] == "succeeded"
    assert "database is locked" not in stack.logs()


def test_a_full_mule_queue_is_reported_and_nothing_vanishes(stack: Stack) -> None:
    blocker = stack.enqueue("diag.sleep", {"seconds": 4}, backend="mule")
    stack.wait_for_job(blocker["id"], ("running",))
    accepted, refused, retry_after = [], None, None
    for _ in range(5000):
        answer = stack.post("/api/jobs", json={"task": "diag.noop", "backend": "mule"})
        if answer.status_code == 503:
            refused, retry_after = answer.json(), answer.headers.get("Retry-After")
            break
        assert answer.status_code == 202
        accepted.append(answer.json()["id"])
    assert refused is not None and refused["error"] == "queue_full" and retry_after == "1"
    failed = stack.get("/api/jobs?status=failed&task=diag.noop&limit=1").json()["jobs"][0]
    assert failed["error"]["type"] == "QueueFull"
    for job_id in accepted:
        assert stack.wait_for_job(job_id, FINISHED, timeout=60)["status"] == "succeeded"


def test_a_stuck_mule_job_is_killed_at_its_timeout_and_recorded(stack: Stack) -> None:
    job = stack.enqueue("fixture.stuck", {"seconds": 60})
    done = stack.wait_for_job(job["id"], FINISHED, timeout=45)
    assert done["status"] == "failed" and done["error"]["type"] in ("TimeoutError", "WorkerLost")
    after = stack.wait_for_job(stack.enqueue("diag.pid", backend="mule")["id"], FINISHED, timeout=30)
    assert after["status"] == "succeeded" and after["result"]["app"] == "app"
    assert after["result"]["pid"] != done["pid"]  # the killed mule was replaced


def test_thumbnail_job_output_is_served_by_nginx(stack: Stack) -> None:
    image = BytesIO()
    Image.new("RGB", (800, 600), "teal").save(image, format="PNG")
    answer = stack.post(
        "/api/examples/thumbnails", data=image.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 202
    stack.wait_for_job(answer.json()["job"]["id"], ("succeeded",))
    thumbnail = stack.get(answer.json()["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/png"
    assert Image.open(BytesIO(thumbnail.content)).size == (256, 192)


@pytest.fixture
def flaky_receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A local webhook receiver that answers 503 to the first delivery, 200 after."""
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(503 if len(received) == 1 else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()


def test_webhook_delivery_is_retried_until_the_receiver_accepts(
    stack: Stack, flaky_receiver: tuple[str, list[bytes]]
) -> None:
    url, received = flaky_receiver
    job = stack.enqueue("examples.deliver_webhook", {"url": url, "payload": {"order": 7}})
    done = stack.wait_for_job(job["id"], FINISHED, timeout=30)
    assert (done["status"], done["attempts"]) == ("succeeded", 2)
    assert received == [b'{"order": 7}', b'{"order": 7}']


def view_the_page(stack: Stack) -> tuple[int, dict[str, Any]]:
    """Fetch the landing page: the count it shows, and the finished job that counted this view."""
    request_id = f"view-{uuid.uuid4().hex}"
    shown = re.search(r"viewed (\d+) times", stack.get("/", headers={"X-Request-ID": request_id}).text)
    assert shown, "the landing page shows no count"
    counted: list[dict[str, Any]] = []

    def view_counted() -> bool:
        recent = stack.get("/api/jobs?task=examples.count_page_view&limit=20").json()["jobs"]
        counted[:] = [job for job in recent if job["request_id"] == request_id and job["status"] in FINISHED]
        return counted != []

    wait_until(view_counted, timeout=10, what=f"the page view {request_id} to be counted")
    return int(shown[1]), counted[0]


def test_page_views_are_counted_by_a_fire_and_forget_mule_job(stack: Stack) -> None:
    shown_first, first = view_the_page(stack)
    shown_second, second = view_the_page(stack)
    assert (first["status"], first["backend"]) == ("succeeded", "mule")
    assert (second["status"], second["backend"]) == ("succeeded", "mule")
    assert second["result"]["views"] == first["result"]["views"] + 1
    # The page is rendered while its own view's job may or may not have run yet.
    assert first["result"]["views"] - 1 <= shown_first <= first["result"]["views"]
    assert first["result"]["views"] <= shown_second <= second["result"]["views"]


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_mule_messages_dropped_by_a_reload_are_recorded_as_failed(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(PROCESSES="2")
    blocker = stack.enqueue("diag.sleep", {"seconds": 3}, backend="mule")
    stack.wait_for_job(blocker["id"], ("running",))
    waiting = [stack.enqueue("diag.noop", backend="mule")["id"] for _ in range(5)]
    stack.reload()
    for job_id in [blocker["id"], *waiting]:
        done = stack.wait_for_job(job_id, FINISHED, timeout=60)
        assert done["status"] == "failed" and done["error"]["type"] == "WorkerLost", done


def test_an_upload_that_is_not_an_image_fails_at_once_on_the_spooler(stack: Stack) -> None:
    answer = stack.post("/api/examples/thumbnails", data=b"not a png", headers={"Content-Type": "image/png"})
    assert answer.status_code == 202
    done = stack.wait_for_job(answer.json()["job"]["id"], FINISHED)
    assert (done["status"], done["attempts"]) == ("failed", 1), done
    assert done["error"]["type"] == "UnidentifiedImageError"
