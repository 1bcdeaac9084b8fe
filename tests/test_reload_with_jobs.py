"""A graceful reload is never held up by background work running in a worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.conftest import Stack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]


def test_a_running_thread_job_does_not_hold_up_a_reload(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    stack = make_stack(PROCESSES="2")
    job = stack.enqueue("diag.sleep", {"seconds": 60}, backend="thread")
    stack.wait_for_job(job["id"], ("running",))
    before = {worker["pid"] for worker in stack.stats()["workers"]}

    started = time.monotonic()
    stack.reload()

    def replaced() -> bool:
        try:
            pids = {worker["pid"] for worker in stack.stats()["workers"] if worker["pid"] > 0}
        except (OSError, ValueError):
            return False  # the master is re-executing itself
        return len(pids) == 2 and not pids & before and stack.get("/healthz").status_code == 200

    wait_until(replaced, timeout=60, what="every worker to be replaced and serving")
    seconds = time.monotonic() - started
    # Before: the worker's exit joined the job's thread, until uWSGI killed it after its mercy.
    assert "NO MERCY" not in stack.logs()
    lost = stack.wait_for_job(job["id"], ("failed",), timeout=60)
    assert lost["error"]["type"] == "WorkerLost"
    figure(f"reload with a running thread job: workers replaced in {seconds:.1f} s, job failed as WorkerLost")
