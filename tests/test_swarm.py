"""The stack on Docker Swarm (`make swarm-up`): three app replicas on one PostgreSQL job store,
nginx following them through Docker's DNS. The module deploys it once, on a one-node swarm it
creates only when the engine is in none, and leaves the engine exactly as it found it."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from app.settings import PROJECT_ROOT
from tests.conftest import TOKEN, HttpStack, wait_until
from tests.docker_stack import compose_with_images

pytestmark = pytest.mark.docker

REPLICAS = 3


def docker(*args: str, timeout: float = 120) -> str:
    """Run a docker command; fail with its output if it fails; return its standard output."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def engine_state() -> dict[str, list[str]]:
    """What a test must leave as it found: swarm membership, networks, volumes, secrets."""
    state = {
        "swarm": [docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()],
        "networks": sorted(docker("network", "ls", "--format", "{{.Name}}").split()),
        "volumes": sorted(docker("volume", "ls", "--quiet").split()),
    }
    state["secrets"] = (
        sorted(docker("secret", "ls", "--format", "{{.Name}}").split())
        if state["swarm"] == ["active"]
        else []
    )
    return state


class SwarmStack(HttpStack):
    """One stack deployed by scripts/swarm.sh, nginx on a free port (host mode)."""

    def __init__(self) -> None:
        super().__init__()
        self.name = f"fus-swarm-{secrets.token_hex(3)}"
        self.env = {
            **os.environ,
            "STACK_NAME": self.name,
            "REPLICAS": str(REPLICAS),
            "HTTP_PORT": str(self.http_port),
            "OPERATOR_TOKEN": TOKEN,
            "APP_IMAGE": os.environ.get("TEST_APP_IMAGE", "flask-uwsgi-stack-app:test"),
            "HEALTHCHECK_INTERVAL": "2s",
            "SWARM_WAIT": "240",
        }

    def script(self, command: str, **extra: str) -> None:
        result = subprocess.run(
            [str(PROJECT_ROOT / "scripts" / "swarm.sh"), command],
            cwd=PROJECT_ROOT,
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, f"swarm.sh {command}:\n{result.stdout}{result.stderr}"

    def host(self) -> str:
        """The host name of the replica that answered /api/info."""
        answer = self.get("/api/info", timeout=10)
        assert answer.status_code == 200, answer.text
        host: str = answer.json()["host"]
        return host

    def app_containers(self) -> list[str]:
        label = f"label=com.docker.swarm.service.name={self.name}_app"
        return docker("ps", "--quiet", "--filter", label).split()


@pytest.fixture(scope="module")
def swarm_stack() -> Iterator[SwarmStack]:
    """The stack on this engine's swarm (made, then left, only if the engine was in none)."""
    compose_with_images()
    before = engine_state()
    joined = before["swarm"] != ["active"]
    if joined:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    stack = SwarmStack()
    try:
        stack.script("up")
        wait_until(lambda: len(stack.app_containers()) == REPLICAS, 120, "every app replica to run")
        yield stack
    finally:
        try:
            stack.script("down", PURGE="1")
        finally:
            if joined:
                docker("swarm", "leave", "--force")
                if "docker_gwbridge" not in before["networks"]:
                    wait_until(
                        lambda: (
                            subprocess.run(
                                ["docker", "network", "rm", "docker_gwbridge"],
                                capture_output=True,
                                check=False,
                            ).returncode
                            == 0
                            or "docker_gwbridge" not in engine_state()["networks"]
                        ),
                        30,
                        "docker_gwbridge to be removed",
                    )
        assert engine_state() == before


def test_requests_through_nginx_reach_several_replicas(swarm_stack: SwarmStack) -> None:
    hosts: set[str] = set()

    def two_answered() -> bool:
        hosts.add(swarm_stack.host())
        return len(hosts) >= 2

    wait_until(two_answered, 60, interval=0.05, what="a second replica to answer")


def test_a_job_enqueued_through_one_replica_is_seen_and_retried_through_another(
    swarm_stack: SwarmStack,
) -> None:
    answer = swarm_stack.post("/api/jobs", json={"task": "diag.fail", "args": {}, "max_attempts": 1})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    first = swarm_stack.host()
    seen: dict[str, str] = {}

    def seen_elsewhere() -> bool:
        response = swarm_stack.get(f"/api/jobs/{job_id}", timeout=10)
        host = swarm_stack.get("/api/info", timeout=10).json()["host"]
        if response.status_code == 200:
            seen[host] = response.json()["status"]
        return len(seen) >= 2 or (host != first and host in seen)

    wait_until(seen_elsewhere, 60, "the job to be seen through a second replica")
    wait_until(
        lambda: swarm_stack.get(f"/api/jobs/{job_id}").json()["status"] == "failed", 60, "the job to fail"
    )
    retried = swarm_stack.post(f"/api/jobs/{job_id}/retry")
    assert retried.status_code in (200, 202), retried.text


def test_a_rolling_update_loses_no_request(swarm_stack: SwarmStack) -> None:
    outcomes: Counter[str] = Counter()
    done = threading.Event()

    def keep_asking() -> None:
        while not done.is_set():
            try:
                outcomes[str(swarm_stack.get("/api/info", timeout=30).status_code)] += 1
            except requests.RequestException as exc:
                outcomes[type(exc).__name__] += 1

    clients = [threading.Thread(target=keep_asking) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        docker("service", "update", "--force", "--quiet", f"{swarm_stack.name}_app", timeout=300)
    finally:
        done.set()
        for client in clients:
            client.join(60)
    assert outcomes["200"] > 0 and set(outcomes) == {"200"}, outcomes


@pytest.mark.faults
def test_killing_a_replica_loses_none_of_its_queued_and_running_jobs(swarm_stack: SwarmStack) -> None:
    ids = [swarm_stack.post("/api/jobs", json={"task": "diag.sleep", "args": {"seconds": 3}}).json()["id"]
           for _ in range(22)]  # fmt: skip
    wait_until(
        lambda: sum(swarm_stack.get(f"/api/jobs/{i}").json()["status"] == "running" for i in ids) >= 2,
        60,
        "two jobs to run",
    )
    victim = swarm_stack.app_containers()[0]
    docker("kill", victim)
    statuses: dict[str, str] = {}

    def all_finished() -> bool:
        for job_id in ids:
            if statuses.get(job_id) != "succeeded":
                response = swarm_stack.get(f"/api/jobs/{job_id}", timeout=10)
                if response.status_code == 200:
                    statuses[job_id] = response.json()["status"]
        return len(statuses) == len(ids) and set(statuses.values()) <= {"succeeded", "failed"}

    wait_until(all_finished, 180, interval=1, what="the 22 jobs to finish")
    assert set(statuses.values()) == {"succeeded"}, statuses
