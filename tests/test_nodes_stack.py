"""Heartbeats on the real stack: the node's run beats from its workers, even while each of
them is busy with a long request (a uWSGI signal would wait for the request to end)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import Stack, wait_until

pytestmark = pytest.mark.integration

NODE_TIMEOUT = 3  # a beat every 0.5 s


def beats(stack: Stack, node: str) -> list[tuple[str, float]]:
    """The (run, beat_at) rows of ``node``, read from the stack's database."""
    with sqlite3.connect(stack.root / "data" / "app.sqlite3") as db:
        rows = db.execute("SELECT run, beat_at FROM nodes WHERE node = ?", (node,)).fetchall()
    return [(row[0], float(row[1])) for row in rows]


def test_the_node_beats_while_every_worker_is_busy_with_a_long_request(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(PROCESSES="2", NODE_NAME="stack-a", NODE_TIMEOUT=str(NODE_TIMEOUT))
    wait_until(lambda: bool(beats(stack, "stack-a")), timeout=10, what="the run's first heartbeat")
    info = stack.get("/api/info").json()
    assert info["node"] == "stack-a" and info["host"]

    def busy_workers() -> int:
        return sum(worker["status"] == "busy" for worker in stack.stats()["workers"])

    with ThreadPoolExecutor(2) as pool:
        holds = [pool.submit(stack.get, "/api/diag/sleep?seconds=8", timeout=30) for _ in range(2)]
        wait_until(lambda: busy_workers() == 2, timeout=5, what="both workers to be busy")
        seen: set[float] = set()

        def advanced_three_times() -> bool:
            seen.update(beat for _, beat in beats(stack, "stack-a"))
            return len(seen) >= 4

        wait_until(
            advanced_three_times, timeout=5, what="the heartbeat to advance while the workers are busy"
        )
        assert busy_workers() == 2 and not any(hold.done() for hold in holds)
        assert all(hold.result().status_code == 200 for hold in holds)
    ((run, _),) = beats(stack, "stack-a")
    nodes = stack.get("/api/stats").json()["nodes"]
    assert [(n["node"], n["run"], n["alive"]) for n in nodes] == [("stack-a", run, True)]
