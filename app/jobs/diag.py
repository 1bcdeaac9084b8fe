"""Diagnostic tasks for smoke tests and benchmarks (off with JOBS_DIAG=false)."""

from __future__ import annotations

import os
import threading
import time

from flask import current_app

from app.jobs.context import current_job
from app.jobs.registry import job


@job("diag.noop", max_attempts=1)
def noop() -> None:
    """Does nothing: measures the job layer's own cost."""


@job("diag.sleep", max_attempts=1)
def sleep(seconds: float = 1.0) -> dict[str, float]:
    """Sleeps, reporting progress every tenth of the way."""
    seconds = float(seconds)
    running = current_job()
    for step in range(10):
        time.sleep(seconds / 10)
        if running:
            running.progress((step + 1) / 10, f"slept {seconds * (step + 1) / 10:.2f} s")
    return {"slept": seconds}


@job("diag.sleep_first", max_attempts=2)
def sleep_first(seconds: float = 60.0) -> dict[str, int]:
    """Sleeps on its first attempt only: a job to kill mid-run and see rerun at once."""
    running = current_job()
    attempt = running.attempt if running else 1
    if attempt == 1:
        time.sleep(float(seconds))
    return {"attempt": attempt}


@job("diag.cpu", max_attempts=1)
def cpu(n: int = 100_000) -> dict[str, int]:
    """Pure-Python work: the sum of squares below n."""
    return {"n": int(n), "sum": sum(i * i for i in range(int(n)))}


@job("diag.fail", max_attempts=3, backoff=0.5)
def fail(times: int = 1) -> dict[str, int]:
    """Raises on its first ``times`` attempts, then succeeds."""
    running = current_job()
    attempt = running.attempt if running else 1
    if attempt <= int(times):
        raise RuntimeError(f"diag.fail: failing attempt {attempt} of the first {times}")
    return {"attempt": attempt}


@job("diag.pid", max_attempts=1)
def pid() -> dict[str, object]:
    """Where it ran: process id, thread name and the Flask app it saw."""
    return {
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "app": current_app.name,
    }
