"""A spooler process's CPU priority: uWSGI's lowest unless the backend is given another."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest

from app.jobs.backends import spooler
from app.jobs.backends.spooler import SPOOL_OK, SpoolerBackend
from tests.conftest import Stack


@pytest.fixture
def reniced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(spooler.os, "setpriority", lambda which, who, nice: calls.append(nice))
    return calls


def test_a_spooler_takes_the_given_priority_once_at_its_first_job(tmp_path: Path, reniced: list[int]) -> None:
    backend = SpoolerBackend(None, tmp_path, None, nice=0)  # type: ignore[arg-type]
    assert backend.handle(None, {}) == SPOOL_OK  # type: ignore[arg-type]
    assert backend.handle(None, {}) == SPOOL_OK  # type: ignore[arg-type]
    assert reniced == [0]


def test_without_a_priority_the_spooler_keeps_uwsgis(tmp_path: Path, reniced: list[int]) -> None:
    backend = SpoolerBackend(None, tmp_path, None)  # type: ignore[arg-type]
    assert backend.handle(None, {}) == SPOOL_OK  # type: ignore[arg-type]
    assert reniced == []


def test_a_priority_refused_is_logged_and_the_job_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(which: int, who: int, nice: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(spooler.os, "setpriority", refuse)
    backend = SpoolerBackend(None, tmp_path, None, nice=0)  # type: ignore[arg-type]
    assert backend.handle(None, {}) == SPOOL_OK  # type: ignore[arg-type]
    assert "spooler stays at nice" in caplog.text


@pytest.mark.integration
def test_on_the_real_stack_the_spooler_that_ran_a_job_takes_spooler_nice(
    make_stack: Callable[..., Stack],
) -> None:
    """uWSGI starts each spooler at nice 19; SPOOLER_NICE's default, 10, takes it back at its
    first job, so that a saturated CPU does not starve the jobs (bench: queue wait p99 seconds at
    nice 19, tens of ms at 10)."""
    limit = resource.getrlimit(resource.RLIMIT_NICE)[0]
    if os.geteuid() != 0 and limit != resource.RLIM_INFINITY and limit < 10:
        pytest.skip("lowering a process's nice needs root or a nice rlimit of 10 (ulimit -e 10)")
    stack = make_stack(SPOOLER_PROCESSES="1")
    (spooler_pid,) = [int(spooler["pid"]) for spooler in stack.stats()["spoolers"]]
    assert os.getpriority(os.PRIO_PROCESS, spooler_pid) == 19  # uWSGI's, until its first job
    answer = stack.post("/api/jobs", json={"task": "diag.noop", "backend": "spooler"})
    assert answer.status_code == 202, answer.text
    stack.wait_for_job(answer.json()["id"], ("succeeded",))
    assert os.getpriority(os.PRIO_PROCESS, spooler_pid) == 10
