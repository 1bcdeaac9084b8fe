"""The app's RELOAD_ON_RSS check (app/monitoring/recycle.py), with a stand-in for uWSGI."""

from __future__ import annotations

import signal
import time
import types
from typing import Any

import pytest

from app.monitoring import recycle
from app.monitoring.recycle import CHECK_EVERY, RssGuard, min_worker_lifetime


def fake_uwsgi(**opt: Any) -> types.ModuleType:
    module = types.ModuleType("uwsgi")
    module.opt = opt  # type: ignore[attr-defined]
    module.worker_id = lambda: 1  # type: ignore[attr-defined]
    module.workers = lambda: [{"id": 1, "last_spawn": time.time() - 5}]  # type: ignore[attr-defined]
    return module


@pytest.fixture
def kills(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr(recycle.signal, "pthread_kill", lambda thread, signum: sent.append(signum))
    return sent


def test_resident_bytes_reads_this_process() -> None:
    assert recycle.resident_bytes() > 1024 * 1024


def test_min_worker_lifetime_is_uwsgis_option_else_its_default() -> None:
    assert min_worker_lifetime(fake_uwsgi()) == 10  # uWSGI 2.0.x, core/uwsgi.c
    assert min_worker_lifetime(fake_uwsgi(**{"min-worker-lifetime": b"3"})) == 3


def test_memory_is_read_only_every_check_every_requests(
    monkeypatch: pytest.MonkeyPatch, kills: list[int]
) -> None:
    reads: list[int] = []

    def resident_bytes() -> int:
        reads.append(1)
        return 0

    monkeypatch.setattr(recycle, "resident_bytes", resident_bytes)
    guard = RssGuard(16, fake_uwsgi(**{"min-worker-lifetime": b"0"}))
    for _ in range(3 * CHECK_EVERY):
        guard.request_done()
    assert len(reads) == 3 and kills == []


def test_a_worker_over_the_limit_is_sent_sighup_once(
    monkeypatch: pytest.MonkeyPatch, kills: list[int]
) -> None:
    monkeypatch.setattr(recycle, "resident_bytes", lambda: 17 * 1024 * 1024)
    guard = RssGuard(16, fake_uwsgi(**{"min-worker-lifetime": b"0"}))
    for _ in range(3 * CHECK_EVERY):
        guard.request_done()
    assert kills == [signal.SIGHUP]


def test_a_worker_younger_than_min_worker_lifetime_is_kept(
    monkeypatch: pytest.MonkeyPatch, kills: list[int]
) -> None:
    monkeypatch.setattr(recycle, "resident_bytes", lambda: 17 * 1024 * 1024)
    guard = RssGuard(16, fake_uwsgi(**{"min-worker-lifetime": b"10"}))
    for _ in range(3 * CHECK_EVERY):
        guard.request_done()
    assert kills == []
