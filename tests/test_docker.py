"""The Docker Compose stack, built without a registry (`make offline-images`), end to end.

One stack serves the whole module; a test that restarts, stops or removes it leaves it answering
again, so that each passes alone and in any order. Without a Docker engine they skip, except with
CI=true, where they fail.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import pytest
from PIL import Image

from tests.conftest import wait_until
from tests.docker_stack import ComposeStack, compose_with_images

pytestmark = pytest.mark.docker

PROCESSES = 4


@pytest.fixture(scope="module")
def docker_stack() -> Iterator[ComposeStack]:
    """The stack under a fresh project name; always removed with its volumes afterwards."""
    compose = compose_with_images()
    stack = ComposeStack(compose, PROCESSES=str(PROCESSES))
    try:
        stack.start()
        yield stack
    finally:
        stack.down()


def test_healthz_answers_through_nginx(docker_stack: ComposeStack) -> None:
    answer = docker_stack.get("/healthz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"


def test_concurrent_requests_are_answered_by_several_worker_processes(
    docker_stack: ComposeStack,
) -> None:
    pids: set[int] = set()
    with ThreadPoolExecutor(16) as pool:
        for _ in range(20):
            answers = list(pool.map(lambda _: docker_stack.get("/api/info"), range(32)))
            assert all(answer.status_code == 200 for answer in answers)
            pids |= {answer.json()["pid"] for answer in answers}
            if len(pids) >= 2:
                break
    assert len(pids) >= 2
    assert docker_stack.get("/api/info").json()["processes"] == PROCESSES


def test_a_sleep_job_runs_on_the_spooler_and_succeeds(docker_stack: ComposeStack) -> None:
    job_id = docker_stack.enqueue("diag.sleep", {"seconds": 0.2})
    wait_until(
        lambda: docker_stack.job_status(job_id) in ("succeeded", "failed"),
        timeout=30,
        what=f"job {job_id} to finish",
    )
    assert docker_stack.job_status(job_id) == "succeeded"


def test_a_reload_replaces_every_worker_without_a_failed_request(
    docker_stack: ComposeStack,
) -> None:
    before = docker_stack.worker_pids()
    answers: list[int] = []
    done = threading.Event()

    def keep_asking() -> None:
        while not done.is_set():
            answers.append(docker_stack.get("/api/info").status_code)

    def all_replaced() -> bool:
        after = docker_stack.worker_pids()
        return len(after) == PROCESSES and not after & before

    with ThreadPoolExecutor(2) as pool:
        clients = [pool.submit(keep_asking) for _ in range(2)]
        docker_stack.exec_app("python", "-m", "app.serve", "reload")
        try:
            wait_until(all_replaced, timeout=30, what="every worker to be replaced")
        finally:
            done.set()
        for client in clients:
            client.result()
    assert answers and set(answers) == {200}


def test_the_stats_server_answers_on_loopback_and_no_other_host_address(
    docker_stack: ComposeStack,
) -> None:
    assert len(docker_stack.stats()["workers"]) == PROCESSES
    addresses = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True)
    others = [address for address in addresses.stdout.split() if ":" not in address]
    assert others, "the host has no IPv4 address besides loopback"
    for address in others:
        with socket.socket() as sock:
            sock.settimeout(3)
            # Binding first proves the address is this machine's own: nothing leaves it.
            sock.bind((address, 0))
            with pytest.raises(OSError):
                sock.connect((address, docker_stack.stats_port))


def test_files_in_the_volumes_belong_to_the_non_root_user(docker_stack: ComposeStack) -> None:
    assert docker_stack.exec_app("id", "-un").stdout.strip() == "app"
    assert docker_stack.exec_app("find", "/data", "-type", "f").stdout.strip(), "no file in /data"
    assert docker_stack.exec_app("find", "/data", "/spool", "!", "-user", "app").stdout == ""


def test_the_volumes_and_database_are_private_and_nginx_still_serves_media(
    docker_stack: ComposeStack,
) -> None:
    image = BytesIO()
    Image.new("RGB", (320, 240), "teal").save(image, format="PNG")
    answer = docker_stack.post(
        "/api/examples/thumbnails", data=image.getvalue(), headers={"Content-Type": "image/png"}
    )
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job"]["id"]
    wait_until(lambda: docker_stack.job_status(job_id) == "succeeded", 60, "the thumbnail job")
    thumbnail = docker_stack.get(answer.json()["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/png"

    paths = ("/data", "/spool", "/run/app", "/data/app.sqlite3")
    modes = docker_stack.exec_app("stat", "-c", "%a %n", *paths).stdout.splitlines()
    assert modes == ["700 /data", "700 /spool", "700 /run/app", "600 /data/app.sqlite3"]
    readable = docker_stack.exec_app("find", "/data", "/spool", "/run/app", "-perm", "/077")
    assert readable.stdout == ""


def test_a_second_uwsgi_in_the_container_refuses_the_directories_the_first_holds(
    docker_stack: ComposeStack,
) -> None:
    second = docker_stack.run("exec", "-T", "app", "python", "-m", "app.serve", "uwsgi", timeout=60)
    assert second.returncode == 4
    assert second.stderr.strip().startswith("another stack is running on RUN_DIR /run/app ")
    assert "launcher pid 1," in second.stderr  # the master, exec'd by the container's launcher
    assert docker_stack.answers()


def test_fifty_queued_jobs_all_succeed_across_an_app_restart(docker_stack: ComposeStack) -> None:
    # The restart kills the spoolers mid-job, and a lost attempt counts: a second one is the
    # at-least-once that a job meant to survive restarts asks for.
    job_ids = [docker_stack.enqueue("diag.sleep", {"seconds": 0.2}, max_attempts=2) for _ in range(50)]
    # 5 s of work for two spoolers: the restart begins with most of it still waiting.
    waiting = [job_id for job_id in job_ids if docker_stack.job_status(job_id) == "queued"]
    assert len(waiting) >= 10, f"only {len(waiting)} jobs still queued: the test proves nothing"
    docker_stack.compose("restart", "app", timeout=60)
    statuses: dict[str, str | None] = {}

    def all_finished() -> bool:
        for job_id in job_ids:
            if statuses.get(job_id) not in ("succeeded", "failed", "cancelled"):
                statuses[job_id] = docker_stack.job_status(job_id)
        return all(status in ("succeeded", "failed", "cancelled") for status in statuses.values())

    wait_until(all_finished, timeout=120, interval=0.5, what="the 50 jobs to finish")
    assert set(statuses.values()) == {"succeeded"}, statuses


@pytest.mark.faults
def test_jobs_running_at_a_restart_are_failed_or_rerun_not_left_running(
    docker_stack: ComposeStack, figure: Callable[[str], None]
) -> None:
    jobs = {
        "mule": {"task": "diag.sleep", "args": {"seconds": 120}, "backend": "mule"},
        "thread": {"task": "diag.sleep", "args": {"seconds": 120}, "backend": "thread"},
        "spooler": {"task": "diag.sleep_first", "args": {"seconds": 120}},
    }
    ids = {}
    for backend, body in jobs.items():
        answer = docker_stack.post("/api/jobs", json=body)
        assert answer.status_code == 202, answer.text
        ids[backend] = answer.json()["id"]
    wait_until(
        lambda: all(docker_stack.job_status(job_id) == "running" for job_id in ids.values()),
        timeout=30,
        what="the three jobs to run",
    )
    began = time.monotonic()
    docker_stack.compose("restart", "app", timeout=90)
    restarted = time.monotonic()
    expected = {"mule": "failed", "thread": "failed", "spooler": "succeeded"}
    wait_until(
        lambda: all(docker_stack.job_status(ids[b]) == status for b, status in expected.items()),
        timeout=90,
        interval=0.5,
        what=f"mule and thread jobs failed, the spooler job rerun: {ids}",
    )
    elapsed = time.monotonic() - restarted
    records = {backend: docker_stack.get(f"/api/jobs/{job_id}").json() for backend, job_id in ids.items()}
    for backend in ("mule", "thread"):
        assert records[backend]["error"]["type"] == "WorkerLost", records[backend]
    assert records["spooler"]["attempts"] == 2 and records["spooler"]["error"]["type"] == "WorkerLost"
    figure(
        f"restart took {restarted - began:.1f} s; {elapsed:.1f} s later the mule and thread jobs"
        " were failed (WorkerLost) and the spooler job rerun and succeeded"
    )


def test_stop_lets_a_request_in_flight_finish_and_takes_under_15_seconds(
    docker_stack: ComposeStack,
) -> None:
    def busy_workers() -> set[int]:
        return {w["pid"] for w in docker_stack.stats()["workers"] if w["status"] == "busy"}

    def request_running() -> bool:
        # Busy on two polls: a health check's request keeps a worker busy for milliseconds.
        busy = busy_workers()
        time.sleep(0.2)
        return bool(busy & busy_workers())

    try:
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(docker_stack.get, "/api/diag/sleep?seconds=3")
            wait_until(request_running, timeout=10, what="the request to reach a worker")
            started = time.monotonic()
            docker_stack.compose("stop", timeout=60)
            elapsed = time.monotonic() - started
            answer = in_flight.result(timeout=30)
    finally:
        docker_stack.up()
    assert answer.status_code == 200, answer.text
    assert elapsed < 15, f"docker compose stop took {elapsed:.1f} s"


def test_down_with_volumes_leaves_no_container_network_or_volume(
    docker_stack: ComposeStack,
) -> None:
    docker_stack.down()
    try:
        assert docker_stack.leftovers() == {"containers": [], "networks": [], "volumes": []}
    finally:
        docker_stack.up()
