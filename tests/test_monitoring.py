"""The `monitoring` profile: alert rules promtool accepts and that fire on what they name, and
Prometheus, built offline from Debian's package, scraping the Compose stack's /metrics."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app.settings import PROJECT_ROOT
from tests.conftest import free_port, require, wait_until
from tests.docker_stack import ComposeStack, compose_with_images

PROMETHEUS_DIR = PROJECT_ROOT / "docker" / "prometheus"


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    require("promtool (Debian's prometheus package)", shutil.which("promtool") is not None)
    result = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_alert_rules_pass_promtool_check_rules() -> None:
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yml")


def test_each_alert_fires_on_what_it_names_and_not_before() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


@pytest.fixture(scope="module")
def monitored_stack() -> Iterator[tuple[ComposeStack, int]]:
    """The Compose stack with the monitoring profile; always removed with its volumes afterwards."""
    compose = compose_with_images()
    prometheus_port = free_port()
    stack = ComposeStack(compose, PROCESSES="2", PROMETHEUS_PORT=str(prometheus_port))
    stack.command += ["--profile", "monitoring"]
    try:
        stack.start()
        yield stack, prometheus_port
    finally:
        stack.down()


def query(port: int, expr: str) -> list[dict[str, Any]]:
    answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    result: list[dict[str, Any]] = answer.json()["data"]["result"]
    return result


@pytest.mark.docker
def test_prometheus_scrapes_the_stack_and_loads_the_alert_rules(
    monitored_stack: tuple[ComposeStack, int],
) -> None:
    stack, port = monitored_stack
    stack.enqueue("diag.noop", {})

    def scraped() -> bool:
        try:
            return bool(query(port, 'up{job="app"} == 1')) and bool(query(port, "uwsgi_up == 1"))
        except requests.RequestException:
            return False

    # The first scrape comes within scrape_interval (15 s) of Prometheus's start.
    wait_until(scraped, timeout=90, what=f"Prometheus to scrape the app\n{stack.logs()}")
    assert len(query(port, "uwsgi_worker_busy")) == 2
    assert query(port, "uwsgi_mules_alive")[0]["value"][1] == "1"
    rules = requests.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {rule["name"] for group in rules for rule in group["rules"]} >= {
        "SpoolerBacklogGrowing",
        "JobFailureRatioHigh",
        "AllWorkersBusy",
        "MuleDown",
        "HarakiriKills",
    }
