"""The stack on Docker Swarm (`make swarm-up`): three app replicas on one PostgreSQL job store,
nginx following them through Docker's DNS (the Compose variant is test_compose_replicas.py).
The module deploys the stack once, on a one-node swarm it creates only when the
engine is in none, and leaves the engine as it found it: no swarm membership, docker_gwbridge,
stack, network, volume (the replicas' anonymous ones included) or secret of its own left."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app.settings import PROJECT_ROOT
from tests.conftest import TOKEN, HttpStack, wait_until
from tests.docker_stack import APP_IMAGE, compose_with_images

pytestmark = pytest.mark.docker

REPLICAS = 3
FIXTURE_TASKS = Path(__file__).parent / "jobs_fixture"


def docker(*args: str, timeout: float = 120) -> str:
    """Run a docker command; fail with its output if it fails; return its standard output."""
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def names(*args: str) -> set[str]:
    return set(docker(*args).split())


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()


def engine_state() -> dict[str, Any]:
    """What the module must leave as it found: swarm membership, networks, volumes, secrets."""
    state = swarm_state()
    return {
        "swarm": state,
        "networks": names("network", "ls", "--format", "{{.Name}}"),
        "volumes": names("volume", "ls", "--quiet"),
        "secrets": names("secret", "ls", "--format", "{{.Name}}") if state == "active" else set(),
    }


def mounted_volumes(container_ids: list[str]) -> set[str]:
    """The volumes (named or anonymous) the containers mount."""
    if not container_ids:
        return set()
    mounts = '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}'
    return set(docker("inspect", "--format", mounts, *container_ids).split())


class SwarmStack(HttpStack):
    """One stack deployed by scripts/swarm.sh, nginx on a free port (host mode), the tests'
    task module (tests/jobs_fixture) bind-mounted into the app replicas."""

    def __init__(self, override: Path) -> None:
        super().__init__()
        self.name = f"fus-swarm-{secrets.token_hex(3)}"
        self.env = {
            **os.environ,
            "STACK_NAME": self.name,
            "REPLICAS": str(REPLICAS),
            "HTTP_PORT": str(self.http_port),
            "OPERATOR_TOKEN": TOKEN,
            "APP_IMAGE": APP_IMAGE,
            "HEALTHCHECK_INTERVAL": "2s",
            "SWARM_WAIT": "240",
            "SWARM_FILES": str(override),
            # Two workers a replica on a two-core machine; a dead replica's jobs adopted in seconds.
            "PROCESSES": "2",
            "NODE_TIMEOUT": "6",
        }
        self.env.pop("DATABASE_PASSWORD", None)
        # Every volume a task of the stack mounted, gathered as tasks come and go.
        self.volumes: set[str] = set()

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

    def containers(self, *, running_only: bool = False) -> list[str]:
        label = f"label=com.docker.stack.namespace={self.name}"
        return docker("ps", *(() if running_only else ("--all",)), "--quiet", "--filter", label).split()

    def app_containers(self) -> list[str]:
        label = f"label=com.docker.swarm.service.name={self.name}_app"
        ids = docker("ps", "--quiet", "--filter", label).split()
        self.volumes |= mounted_volumes(ids)
        return ids

    def ready(self) -> bool:
        """Every app replica runs and is healthy."""
        ids = self.app_containers()
        if len(ids) != REPLICAS:
            return False
        health = docker("inspect", "--format", "{{.State.Health.Status}}", *ids).split()
        return health == ["healthy"] * REPLICAS


def write_override(directory: Path) -> Path:
    """A Compose file deployed with the stack: the tests' task module in every app replica."""
    override = directory / "swarm-test.yml"
    override.write_text(
        json.dumps(
            {
                "services": {
                    "app": {
                        "environment": {"PYTHONPATH": "/opt/jobs_fixture", "JOBS_IMPORT": "fixture_tasks"},
                        "volumes": [
                            {
                                "type": "bind",
                                "source": str(FIXTURE_TASKS),
                                "target": "/opt/jobs_fixture",
                                "read_only": True,
                            }
                        ],
                    }
                },
            }
        )
    )
    return override


@pytest.fixture(scope="module")
def swarm_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwarmStack]:
    """The stack on this engine's swarm (made, then left, only if the engine was in none)."""
    compose_with_images()
    before = engine_state()
    joined = before["swarm"] != "active"
    if joined:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    stack = SwarmStack(write_override(tmp_path_factory.mktemp("swarm")))
    try:
        stack.script("up")
        wait_until(stack.ready, 180, "every app replica to be healthy", interval=1)
        yield stack
    finally:
        try:
            stack.volumes |= mounted_volumes(stack.containers())
            stack.script("down", PURGE="1")
            # Volumes of containers swarm.sh could no longer see (removed task history).
            leftover = stack.volumes & names("volume", "ls", "--quiet")
            if leftover:
                docker("volume", "rm", *leftover)
        finally:
            if joined:
                docker("swarm", "leave", "--force")
                if "docker_gwbridge" not in before["networks"]:
                    wait_until(
                        lambda: (
                            "docker_gwbridge" not in names("network", "ls", "--format", "{{.Name}}")
                            or subprocess.run(
                                ["docker", "network", "rm", "docker_gwbridge"],
                                capture_output=True,
                                check=False,
                            ).returncode
                            == 0
                        ),
                        30,
                        "docker_gwbridge to be removed",
                    )
        after = engine_state()
        assert after["swarm"] == before["swarm"]
        assert after["secrets"] == before["secrets"]
        # Other projects may create networks and volumes meanwhile: none of this stack's is left,
        # and no network or volume that was there is gone.
        assert not {n for n in after["networks"] - before["networks"] if n.startswith(stack.name)
                    or n in ("docker_gwbridge", "ingress")}, after["networks"]  # fmt: skip
        assert before["networks"] <= after["networks"]
        assert not (after["volumes"] - before["volumes"]) & stack.volumes
        assert not {v for v in after["volumes"] if v.startswith(stack.name)}


def test_requests_through_nginx_reach_every_replica(swarm_stack: SwarmStack) -> None:
    hosts: set[str] = set()

    def all_answered() -> bool:
        hosts.add(swarm_stack.host())
        return len(hosts) == REPLICAS

    wait_until(all_answered, 30, interval=0.05, what=f"{REPLICAS} replicas to answer")


def test_a_periodic_job_runs_once_per_period_across_replicas(swarm_stack: SwarmStack) -> None:
    """fixture.tick (every second) fires in all three replicas' masters; each second yields one
    job across them (the unique key in the shared store), which one replica's spooler runs and
    logs in its own DATA_DIR/ticks.log."""
    start = int(time.time()) + 1
    end = start + 8
    lines: list[tuple[str, int]] = []

    def ticks() -> list[tuple[str, int]]:
        found = []
        for container in swarm_stack.app_containers():
            # A replica whose spooler has run no tick yet has no log.
            log = docker("exec", container, "sh", "-c", "cat /data/ticks.log 2>/dev/null || true")
            found += [(container, int(line.split()[0])) for line in log.splitlines()]
        return found

    def past_the_end() -> bool:
        lines[:] = ticks()
        return any(slot >= end + 1 for _, slot in lines)

    wait_until(past_the_end, 30, "the periods to pass and their jobs to run", interval=1)
    ran = sorted(slot for _, slot in lines if start <= slot < end)
    assert len(ran) == len(set(ran)), f"a period ran twice: {ran}"
    # A timer tick that jitters over a period's boundary may merge two periods into one.
    assert len(ran) >= end - start - 2, f"periods {start}..{end}: {ran}"
    listed = swarm_stack.get("/api/jobs", params={"task": "fixture.tick", "limit": 200}).json()["jobs"]
    slots = [job["result"] for job in listed if job["status"] == "succeeded"]
    assert len(slots) == len(set(slots)), sorted(slots)
    assert set(ran) <= set(slots), (ran, sorted(slots))


def job_state(stack: HttpStack, job_id: str) -> tuple[str, int]:
    job = stack.get(f"/api/jobs/{job_id}", timeout=10).json()
    return job["status"], job["attempts"]


def test_a_job_enqueued_through_one_replica_is_seen_and_retried_through_the_others(
    swarm_stack: SwarmStack,
) -> None:
    """nginx spreads requests over the replicas in turn: with a store per replica, two GETs in
    three would answer 404; with the shared one, every replica answers and retries the job."""
    answer = swarm_stack.post(
        "/api/jobs", json={"task": "diag.fail", "args": {"times": 1}, "max_attempts": 1}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    hosts: set[str] = set()
    statuses: list[int] = []

    def failed_through_every_replica() -> bool:
        response = swarm_stack.get(f"/api/jobs/{job_id}", timeout=10)
        statuses.append(response.status_code)
        hosts.add(swarm_stack.host())
        return len(hosts) == REPLICAS and len(statuses) >= 6 and response.json().get("status") == "failed"

    wait_until(failed_through_every_replica, 60, "the job to fail and every replica to answer")
    assert set(statuses) == {200}, statuses
    # Retried through whichever replica nginx picks: attempt 2 succeeds (diag.fail fails once).
    retried = swarm_stack.post(f"/api/jobs/{job_id}/retry", timeout=10)
    assert retried.status_code == 202, retried.text
    wait_until(lambda: job_state(swarm_stack, job_id) == ("succeeded", 2), 30, "the retried job to succeed")


def test_a_rolling_update_loses_no_request(swarm_stack: SwarmStack, figure: Callable[[str], None]) -> None:
    outcomes: Counter[str] = Counter()
    hosts: set[str] = set()
    done = threading.Event()

    def keep_asking() -> None:
        session = requests.Session()
        while not done.is_set():
            try:
                response = session.get(swarm_stack.url("/api/info"), timeout=30)
                outcomes[str(response.status_code)] += 1
                if response.status_code == 200:
                    hosts.add(response.json()["host"])
            except requests.RequestException as exc:
                outcomes[type(exc).__name__] += 1

    old = set(swarm_stack.app_containers())
    clients = [threading.Thread(target=keep_asking) for _ in range(4)]
    for client in clients:
        client.start()
    started = time.monotonic()
    try:
        docker("service", "update", "--force", "--quiet", f"{swarm_stack.name}_app", timeout=300)
    finally:
        done.set()
        for client in clients:
            client.join(60)
    figure(
        f"swarm rolling update: {sum(outcomes.values())} requests"
        f" in {time.monotonic() - started:.1f} s: {dict(outcomes)}"
    )
    assert outcomes["200"] > 0 and set(outcomes) == {"200"}, outcomes
    assert not old & set(swarm_stack.app_containers()), "a replica was not replaced"
    wait_until(swarm_stack.ready, 60, "every new replica to be healthy", interval=1)


@pytest.mark.faults
def test_killing_a_replica_loses_none_of_its_queued_and_running_jobs(
    swarm_stack: SwarmStack, figure: Callable[[str], None]
) -> None:
    """22 jobs spread over the replicas, 2 running in each; one replica's container is killed.
    A live replica's reaper adopts its jobs once its heartbeat is NODE_TIMEOUT (6 s) old: the
    waiting ones run there, the running ones run again, their first attempt recorded as lost."""
    ids = []
    for _ in range(22):
        answer = swarm_stack.post(
            "/api/jobs", json={"task": "diag.sleep", "args": {"seconds": 3}, "max_attempts": 2}
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])

    def jobs() -> list[dict[str, Any]]:
        """The records; a request that fails as the replica dies (a 502 or 504 from nginx) is
        asked again: what is checked here is the jobs, not those requests."""
        found = []
        for job_id in ids:
            for _ in range(5):
                answer = swarm_stack.get(f"/api/jobs/{job_id}", timeout=10)
                if answer.status_code == 200:
                    break
            assert answer.status_code == 200, answer.text
            found.append(answer.json())
        return found

    running: dict[str, list[str]] = {}

    def two_running_on_a_replica() -> bool:
        running.clear()
        for job in jobs():
            if job["status"] == "running":
                running.setdefault(job["node"], []).append(job["id"])
        return any(len(held) == 2 for held in running.values())

    wait_until(two_running_on_a_replica, 60, "two jobs to run on one replica", interval=0.2)
    victim = next(node for node, held in running.items() if len(held) == 2)
    waiting = [job["id"] for job in jobs() if job["node"] == victim and job["status"] == "queued"]
    killed_at = time.monotonic()
    docker("kill", victim)  # the node's name is its container's host name: the id's prefix
    final: list[dict[str, Any]] = []

    def all_finished() -> bool:
        final[:] = jobs()
        return all(job["status"] in ("succeeded", "failed", "cancelled") for job in final)

    wait_until(all_finished, 150, interval=1, what="the 22 jobs to finish")
    took = time.monotonic() - killed_at
    by_id = {job["id"]: job for job in final}
    outcome = Counter((job["status"], job["attempts"]) for job in final)
    figure(
        f"swarm replica {victim} killed with {len(running[victim])} running, {len(waiting)} queued"
        f" of its jobs: all finished {took:.0f} s later, (status, attempts): {dict(outcome)}"
    )
    assert {job["status"] for job in final} == {"succeeded"}, final
    for job_id in running[victim]:
        job = by_id[job_id]
        assert job["attempts"] == 2 and job["node"] != victim, job
        assert job["error"]["type"] == "WorkerLost" and victim in job["error"]["message"], job
    for job_id in waiting:
        assert by_id[job_id]["node"] != victim, by_id[job_id]
    assert sum(job["attempts"] for job in final) == len(ids) + len(running[victim]), final
