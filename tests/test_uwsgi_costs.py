"""uWSGI options that cost every request: what the production configuration leaves out."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from app.monitoring.recycle import CHECK_EVERY
from tests.conftest import Stack, wait_until

pytestmark = pytest.mark.integration


def test_workers_report_rss_without_parsing_smaps_after_every_request(stack: Stack) -> None:
    path = f"/api/no-such-{uuid.uuid4().hex}"
    assert stack.get(path).status_code == 404
    # log-4xx logs the request; memory-report would add its memory figures to the line, read
    # by parsing all of /proc/self/smaps after every request (40% of the peak requests/s).
    lines: list[str] = []

    def logged() -> bool:
        lines[:] = [line for line in stack.logs().splitlines() if path in line and "GET" in line]
        return bool(lines)

    wait_until(logged, timeout=10, what="uWSGI to log the 404")
    assert "rss usage" not in lines[0] and "address space usage" not in lines[0]
    # Nor does uWSGI read RSS after every request (reload-on-rss) or in a thread per worker (its
    # memory collector): the stats the app serves read it from /proc when asked.
    workers = stack.get("/api/stats").json()["uwsgi"]["workers"]
    assert all(worker["rss"] > 0 and worker["vsz"] >= worker["rss"] for worker in workers)


def test_a_worker_over_reload_on_rss_is_recycled_after_its_request_and_no_request_fails(
    make_stack: Callable[..., Stack],
) -> None:
    # Every worker is over 16 MB; uWSGI's anti-fork-bomb guard (min-worker-lifetime, 60 s by
    # default, which the app's check honours) is brought down to 1 s for the test.
    stack = make_stack(PROCESSES="1", RELOAD_ON_RSS="16", UWSGI_MIN_WORKER_LIFETIME="1")
    first = stack.stats()["workers"][0]
    # Older than min-worker-lifetime, its next 64th request checks its memory and recycles it.
    wait_until(lambda: time.time() - first["last_spawn"] > 1.5, timeout=5, what="the worker to be 1 s old")
    answers = [stack.get("/api/info").status_code for _ in range(2 * CHECK_EVERY)]
    assert answers == [200] * len(answers)
    wait_until(lambda: stack.stats()["workers"][0]["pid"] != first["pid"], timeout=10, what="a fresh worker")
    assert "is over RELOAD_ON_RSS (16 MB): recycled after this request" in stack.logs()
    assert stack.get("/api/info").status_code == 200
