"""A spooler process's CPU priority: uWSGI's lowest unless the backend is given another."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.jobs.backends import spooler
from app.jobs.backends.spooler import SPOOL_OK, SpoolerBackend


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
