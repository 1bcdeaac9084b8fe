"""The project's Docker Compose stack, built from the offline images under a project name of its
own, on free loopback ports, for tests/test_docker.py."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from typing import Any

import pytest
import requests

from app.settings import PROJECT_ROOT
from tests.conftest import IN_CI, TOKEN, HttpStack, wait_until

ENV_FILE = PROJECT_ROOT / ".env.offline"
# Variables .env.offline sets: one left in the caller's environment would win over the file.
OFFLINE_VARIABLES = ("PYTHON_IMAGE", "NGINX_IMAGE", "PIP_NO_INDEX")
# Its own tag: the tests' image (from the Debian base) never replaces the user's.
APP_IMAGE = os.environ.get("TEST_APP_IMAGE", "flask-uwsgi-stack-app:test")


def image_ids(*args: str) -> set[str]:
    """The ids ``docker images -q`` lists with ``args`` (a reference, a filter)."""
    command = ["docker", "images", "-q", "--no-trunc", *args]
    listed = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return set(listed.stdout.split())


class FoundImages:
    """The engine's images as the session's first Docker test found them. ``restore`` removes
    what the session's builds added: the test image if it was not there, and the untagged
    images (a build's first stage, an image the tag moved away from) that are new. The offline
    base images stay: `make offline-images` installs them, as apt installs nginx."""

    def __init__(self) -> None:
        self.app_image = image_ids(APP_IMAGE)
        self.untagged = image_ids("--filter", "dangling=true")

    def restore(self) -> list[str]:
        """Remove the images the session added; returns them (the tag or the ids)."""
        added = [APP_IMAGE] if not self.app_image and image_ids(APP_IMAGE) else []
        added += sorted(image_ids("--filter", "dangling=true") - self.untagged)
        if added:
            removed = subprocess.run(["docker", "rmi", *added], capture_output=True, text=True, timeout=300)
            assert removed.returncode == 0, f"docker rmi {added} failed: {removed.stderr}"
        return added


# Set by the session's first compose_with_images(); conftest's pytest_sessionfinish restores it.
FOUND: list[FoundImages] = []


def docker_missing() -> str | None:
    """Why the Docker tests cannot run here, or None when the engine and Compose are there."""
    if shutil.which("docker") is None:
        return "the docker client is not installed"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine does not answer (docker info timed out)"
    if info.returncode != 0:
        return "the Docker engine does not answer (docker info failed)"
    if compose_command() is None:
        return "neither docker compose nor docker-compose is installed"
    return None


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) when the plugin is there, else ``docker-compose`` (v1.29), else None."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def compose_with_images() -> list[str]:
    """The Compose command, once the offline images are built; skips without Docker, except in
    CI, where its absence fails the test."""
    missing = docker_missing()
    if missing and IN_CI:
        pytest.fail(f"{missing}, and CI=true requires Docker")
    if missing:
        pytest.skip(missing)
    compose = compose_command()
    assert compose is not None
    if not FOUND:
        FOUND.append(FoundImages())
    build_offline_images()
    return compose


def build_offline_images() -> None:
    """Run scripts/offline-images.sh (seconds when its images exist); fail with its output."""
    result = subprocess.run(
        [str(PROJECT_ROOT / "scripts" / "offline-images.sh")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"offline-images.sh failed:\n{result.stdout}{result.stderr}"


class ComposeStack(HttpStack):
    """One Compose project: nginx on HTTP_PORT, the stats server on 127.0.0.1:STATS_PORT."""

    def __init__(self, compose: list[str], **settings: str) -> None:
        super().__init__()
        self.project = f"fus-test-{secrets.token_hex(4)}"
        environ = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
        self.env = {
            **environ,
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(self.http_port),
            "STATS_PORT": str(self.stats_port),
            "OPERATOR_TOKEN": TOKEN,
            "APP_IMAGE": APP_IMAGE,
            "HEALTHCHECK_INTERVAL": "2s",
            **settings,
        }
        self.command = [*compose, "--env-file", str(ENV_FILE), "--project-name", self.project]

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a compose subcommand in the project; fail with its output if it fails."""
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
        return result

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        """Build the app image and start the stack; return once nginx answers /healthz."""
        self.compose("build", timeout=900)
        self.up()

    def up(self) -> None:
        """Create or start the project's containers; return once nginx answers /healthz."""
        self.compose("up", "--detach", timeout=300)
        try:
            wait_until(self.answers, timeout=120, what="nginx to answer /healthz")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def answers(self) -> bool:
        """True when nginx answers /healthz with 200."""
        try:
            return requests.get(self.url("/healthz"), timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def enqueue(self, task: str, args: dict[str, Any], **options: Any) -> str:
        """Queue a job through nginx, with the API's options (backend, max_attempts...); returns its id."""
        response = self.post("/api/jobs", json={"task": task, "args": args, **options})
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def job_status(self, job_id: str) -> str | None:
        """The job's status, or None while the app does not answer (restarting)."""
        try:
            response = self.get(f"/api/jobs/{job_id}", timeout=5)
        except requests.RequestException:
            return None
        if response.status_code != 200:
            return None
        status: str = response.json()["status"]
        return status

    def worker_pids(self) -> set[int]:
        """The pids of the running workers; empty while the stats server is down (reloading)."""
        try:
            workers = self.stats()["workers"]
        except (OSError, ValueError):
            return set()
        return {worker["pid"] for worker in workers if worker["pid"] > 0}

    def exec_app(self, *command: str) -> subprocess.CompletedProcess[str]:
        """Run a command in the running app container, as its user."""
        return self.compose("exec", "-T", "app", *command, timeout=60)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, networks and volumes that still carry this project's label."""
        label = f"label=com.docker.compose.project={self.project}"
        found = {}
        for kind, listing in (
            ("containers", ["docker", "ps", "--all", "--quiet", "--filter", label]),
            ("networks", ["docker", "network", "ls", "--quiet", "--filter", label]),
            ("volumes", ["docker", "volume", "ls", "--quiet", "--filter", label]),
        ):
            output = subprocess.run(listing, capture_output=True, text=True, check=True).stdout
            found[kind] = output.split()
        return found

    def logs(self) -> str:
        result = self.run("logs", "--no-color", "--tail", "100", timeout=60)
        return result.stdout + result.stderr

    def down(self) -> None:
        """Remove the project's containers, network and volumes; keep the (cached) image."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=120)
