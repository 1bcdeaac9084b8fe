"""Two stacks (two nodes) sharing one PostgreSQL job store, on this machine: what a node lost
with its jobs becomes, and what it does when it comes back. The Docker Swarm tests
(tests/test_swarm.py) repeat the kill across containers."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Stack, wait_until

pytestmark = pytest.mark.integration

RUNNING = 2
QUEUED = 20


def stack_processes(stack: Stack) -> list[int]:
    """The launcher and every process under it (uWSGI's master, workers, spoolers, mules; nginx)."""
    assert stack.process is not None
    found = [stack.process.pid]
    for pid in found:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
        found.extend(int(child) for child in children.stdout.split())
    return found


def lose(stack: Stack) -> None:
    """The node is lost at once, as a machine that loses power: every process SIGKILLed together."""
    for pid in stack_processes(stack):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert stack.process is not None
    stack.process.wait(timeout=10)


def test_a_lost_nodes_spooler_jobs_finish_on_the_other_once_each(
    make_stack: Callable[..., Stack], postgres_url: str, tmp_path: Path, figure: Callable[[str], None]
) -> None:
    shared = {"DATABASE_URL": postgres_url, "NODE_TIMEOUT": "3", "SPOOLER_PROCESSES": "2", "PROCESSES": "2"}
    root_a = tmp_path / "a"
    root_a.mkdir()
    a = make_stack(root=root_a, NODE_NAME="node-a", **shared)
    b = make_stack(NODE_NAME="node-b", **shared)
    hold, log = tmp_path / "hold", tmp_path / "runs.log"
    hold.touch()
    running = [
        a.enqueue("fixture.held", {"label": f"r{i}", "log": str(log), "hold": str(hold)})
        for i in range(RUNNING)
    ]
    for job in running:
        a.wait_for_job(job["id"], ("running",))
    queued = [a.enqueue("fixture.held", {"label": f"q{i}", "log": str(log)}) for i in range(QUEUED)]
    assert {b.job(job["id"])["node"] for job in running + queued} == {"node-a"}, "B sees A's jobs"

    lose(a)
    hold.unlink()
    started = time.monotonic()
    ids = [job["id"] for job in running + queued]
    wait_until(
        lambda: all(b.job(job_id)["status"] == "succeeded" for job_id in ids),
        timeout=60,
        what="node B to finish all 22 jobs of the lost node A",
    )
    figure(
        f"node lost with {RUNNING} running + {QUEUED} queued spooler jobs: all succeeded on the other node "
        f"{time.monotonic() - started:.1f} s later (NODE_TIMEOUT=3)"
    )
    for job_id in ids:
        record = b.job(job_id)
        assert record["node"] == "node-b", record
    for job in running:
        record = b.job(job["id"])
        assert record["attempts"] == 2, record
        assert record["error"]["type"] == "WorkerLost" and "node-a" in record["error"]["message"], record
    for job in queued:
        assert b.job(job["id"])["attempts"] == 1
    assert collections.Counter(log.read_text().split()) == {f"r{i}": 1 for i in range(RUNNING)} | {
        f"q{i}": 1 for i in range(QUEUED)
    }, "each job ran to its end once"

    # Node A comes back with its old spool files: they are stale copies, none runs again.
    spooled = [path for path in (root_a / "spool").iterdir() if path.name.startswith("uwsgi_spoolfile")]
    assert spooled, "A's spool files survived its loss"
    a_again = make_stack(root=root_a, NODE_NAME="node-a", **shared)
    wait_until(
        lambda: not any(path.exists() for path in spooled),
        timeout=30,
        what="node A to go through its old spool files",
    )
    assert sum(1 for _ in log.read_text().split()) == RUNNING + QUEUED, "no job ran twice"
    assert all(a_again.job(job_id)["status"] == "succeeded" for job_id in ids)


def test_a_periodic_job_runs_once_per_period_across_nodes(
    make_stack: Callable[..., Stack], postgres_url: str, tmp_path: Path
) -> None:
    """fixture.tick (every second) is fired by both nodes' timers each second; the store keeps one
    job per period, which runs once (a line in its node's DATA_DIR/ticks.log)."""
    shared = {"DATABASE_URL": postgres_url, "PROCESSES": "2"}
    stacks = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        stacks.append(make_stack(root=tmp_path / name, NODE_NAME=f"node-{name}", **shared))
    logs = [tmp_path / name / "data" / "ticks.log" for name in ("a", "b")]

    def ticks() -> list[tuple[str, str, str, float]]:
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(
                "SELECT unique_key, node, status, created_at FROM jobs WHERE task = 'fixture.tick'"
            ).fetchall()
        return [(str(key), str(node), str(status), float(created)) for key, node, status, created in rows]

    wait_until(lambda: len(ticks()) >= 10, timeout=40, what="ten periods of fixture.tick")
    # Whichever node's timer fires first in a period enqueues its job; with A gone, B's alone do.
    stacks[0].stop()
    wait_until(
        lambda: sum(record[1] == "node-b" for record in ticks()) >= 3,
        timeout=30,
        what="node B to enqueue periods of its own once node A stopped",
    )
    stacks[1].stop()
    records = ticks()
    created = sorted(record[3] for record in records)
    span = math.ceil(created[-1] - created[0]) + 1
    assert len(records) <= span + 1, f"{len(records)} jobs in {span} periods: more than one per period"
    ran = sum(len(path.read_text().splitlines()) for path in logs if path.exists())
    assert ran == sum(record[2] == "succeeded" for record in records), "each period's job ran once"


def test_a_job_failed_on_one_node_is_retried_through_the_other(
    make_stack: Callable[..., Stack], postgres_url: str
) -> None:
    shared = {"DATABASE_URL": postgres_url, "PROCESSES": "2"}
    a = make_stack(NODE_NAME="node-a", **shared)
    b = make_stack(NODE_NAME="node-b", **shared)
    # diag.fail fails its first attempt; with one attempt allowed the job fails on A.
    job = a.enqueue("diag.fail", {"times": 1}, max_attempts=1)
    assert a.wait_for_job(job["id"], ("failed",))["node"] == "node-a"
    assert b.post(f"/api/jobs/{job['id']}/retry").status_code == 202
    record = b.wait_for_job(job["id"], ("succeeded",))
    assert (record["attempts"], record["node"]) == (2, "node-b"), record
