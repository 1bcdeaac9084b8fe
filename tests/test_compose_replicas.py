"""The Compose variant of the replicas (`--profile postgres --scale app=3`, docker/replicas.yml):
three app containers on one PostgreSQL job store behind nginx.

A module of its own, apart from test_swarm.py, whose stack (three replicas, PostgreSQL, nginx)
stays up until that module ends: started beside it, an app container here once took too long to
become healthy on two shared cores, and `up` gave up (CI, 2026-11-25)."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator

import pytest

from tests.conftest import wait_until
from tests.docker_stack import ComposeStack, compose_with_images
from tests.test_swarm import REPLICAS, docker

pytestmark = pytest.mark.docker


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {count} consecutive free ports")


@pytest.fixture(scope="module")
def compose_replicas() -> Iterator[ComposeStack]:
    """`docker compose --profile postgres up --scale app=3` with docker/replicas.yml."""
    compose = compose_with_images()
    stats = free_ports(REPLICAS)
    stack = ComposeStack(
        compose,
        STATS_PORT=f"{stats}-{stats + REPLICAS - 1}",
        DATABASE_PASSWORD=secrets.token_hex(12),
        PROCESSES="2",
    )
    files = ["-f", "docker-compose.yml", "-f", "docker-compose.override.yml", "-f", "docker/replicas.yml"]
    stack.command += [*files, "--profile", "postgres"]
    try:
        stack.compose("build", "app", timeout=900)
        stack.compose("up", "--detach", "--scale", f"app={REPLICAS}", timeout=300)
        wait_until(stack.answers, 150, "nginx to answer /healthz")
        yield stack
    finally:
        down = stack.run("down", "--volumes", "--timeout", "10", timeout=120)
        left = docker(
            "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"
        )
        assert down.returncode == 0 and not left.strip(), f"{down.stdout}{down.stderr}"


def test_compose_scaled_replicas_share_the_job_store_behind_nginx(compose_replicas: ComposeStack) -> None:
    hosts: set[str] = set()

    def all_answered() -> bool:
        hosts.add(compose_replicas.get("/api/info", timeout=10).json()["host"])
        return len(hosts) == REPLICAS

    wait_until(all_answered, 60, interval=0.05, what=f"{REPLICAS} replicas to answer through nginx")
    job_id = compose_replicas.enqueue("diag.noop", {})
    statuses: list[int] = []

    def succeeded_through_every_replica() -> bool:
        response = compose_replicas.get(f"/api/jobs/{job_id}", timeout=10)
        statuses.append(response.status_code)
        hosts.add(compose_replicas.get("/api/info", timeout=10).json()["host"])
        return len(statuses) >= 6 and response.json().get("status") == "succeeded"

    wait_until(succeeded_through_every_replica, 60, "the job to succeed, seen through every replica")
    assert set(statuses) == {200}, statuses
