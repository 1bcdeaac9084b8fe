"""Overload, reloads and killed workers under load: the stack sheds what it cannot serve in time,
loses no request on a graceful reload, and recovers by itself."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
from flask import Flask

from app.settings import Settings, SettingsError
from app.web.shedding import QueueShedding
from tests.conftest import AUTH, Stack, wait_until


def _app_that_counts() -> tuple[QueueShedding, list[str]]:
    flask_app = Flask("counting")
    ran: list[str] = []

    @flask_app.get("/work")
    def work() -> str:
        ran.append("work")
        return "done"

    return QueueShedding(flask_app.wsgi_app, queue_timeout=2.0), ran


def _client(wsgi: QueueShedding) -> Flask:
    shell = Flask("shell")
    shell.wsgi_app = wsgi  # type: ignore[method-assign]
    return shell


def test_a_request_that_waited_longer_than_the_queue_timeout_is_shed_with_a_json_503() -> None:
    wsgi, ran = _app_that_counts()
    started = f"t={time.time() - 3:.3f}"
    answer = _client(wsgi).test_client().get("/work", headers={"X-Request-Start": started})
    assert answer.status_code == 503 and ran == []
    body = answer.get_json()
    assert body["error"] == "overloaded" and "waited 3." in body["message"]
    assert int(answer.headers["Retry-After"]) >= 1


def test_a_request_that_waited_less_than_the_queue_timeout_is_run() -> None:
    wsgi, ran = _app_that_counts()
    client = _client(wsgi).test_client()
    assert client.get("/work", headers={"X-Request-Start": f"t={time.time() - 1:.3f}"}).status_code == 200
    assert client.get("/work").status_code == 200  # no stamp (flask run, tests): nothing to measure
    assert client.get("/work", headers={"X-Request-Start": "t=garbage"}).status_code == 200
    assert ran == ["work", "work", "work"]


def test_queue_timeout_defaults_to_harakiri_and_must_end_before_nginx_gives_up() -> None:
    assert Settings.from_env({"HARAKIRI": "12"}).queue_timeout == 12
    assert Settings.from_env({"HARAKIRI": "12", "QUEUE_TIMEOUT": "16"}).queue_timeout == 16
    with pytest.raises(SettingsError, match=r"^QUEUE_TIMEOUT: expected at most HARAKIRI \+ 4 = 16"):
        Settings.from_env({"HARAKIRI": "12", "QUEUE_TIMEOUT": "17"})


@pytest.mark.integration
def test_nginx_overrides_a_client_supplied_request_start(stack: Stack) -> None:
    answer = stack.get("/healthz", headers={"X-Request-Start": "t=1.000"})
    assert answer.status_code == 200


@dataclass
class Burst:
    """What a burst of slow requests got back."""

    statuses: Counter[int]
    ended: float


def _burst(stack: Stack, clients: int, seconds: float, client_timeout: float) -> Burst:
    def one(_: int) -> int:
        try:
            url = stack.url(f"/api/diag/sleep?seconds={seconds}")
            return requests.get(url, headers=AUTH, timeout=client_timeout).status_code
        except requests.RequestException:
            return 0  # the client gave up (its timeout) or the connection failed

    with ThreadPoolExecutor(clients) as pool:
        statuses = Counter(pool.map(one, range(clients)))
    return Burst(statuses, time.monotonic())


def _seconds_to_recover(stack: Stack, since: float, limit: float) -> float:
    """Poll /healthz until it answers 200 within a second; seconds from ``since``."""

    def healthy() -> bool:
        try:
            return requests.get(stack.url("/healthz"), timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(healthy, timeout=limit, what="/healthz to answer within a second after the burst")
    return time.monotonic() - since


@pytest.mark.integration
@pytest.mark.faults
def test_a_burst_of_slow_requests_is_shed_and_the_stack_recovers_within_seconds(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    # nginx waits HARAKIRI + 5 = 9 s; 100 requests of 1.5 s on 2 workers are 75 s of work.
    stack = make_stack(PROCESSES="2", HARAKIRI="4")
    started = time.monotonic()
    burst = _burst(stack, clients=100, seconds=1.5, client_timeout=20)
    recovered = _seconds_to_recover(stack, burst.ended, limit=30)
    figure(
        f"clients=100 answers={dict(sorted(burst.statuses.items()))} "
        f"burst_s={burst.ended - started:.1f} recovery_s={recovered:.1f}"
    )
    assert recovered < 10  # expected well under a second; without shedding, over a minute
    assert set(burst.statuses) <= {200, 503}, burst.statuses
    assert burst.statuses[200] >= 2


@pytest.mark.integration
@pytest.mark.faults
def test_requests_whose_clients_left_are_not_run(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    # The clients leave after 1 s, long before the 20 s budget: only the closed connection tells.
    stack = make_stack(PROCESSES="2", HARAKIRI="20")
    burst = _burst(stack, clients=30, seconds=1.5, client_timeout=1)
    recovered = _seconds_to_recover(stack, burst.ended, limit=30)
    ran = sum(worker["requests"] for worker in stack.stats()["workers"])
    figure(f"clients=30 gave_up_after_s=1 recovery_s={recovered:.1f}")
    assert burst.statuses[0] >= 26
    assert recovered < 8  # 30 requests of 1.5 s on 2 workers would take over 20 s
    assert ran >= 30  # every request reached a worker: the shed ones were answered at once
