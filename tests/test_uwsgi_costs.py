"""uWSGI options that cost every request: what the production configuration leaves out."""

from __future__ import annotations

import uuid

import pytest

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
    # reload-on-rss still reads each worker's RSS (from /proc/self/stat) and the stats show it.
    assert all(worker["rss"] > 0 for worker in stack.stats()["workers"] if worker["requests"] > 0)
