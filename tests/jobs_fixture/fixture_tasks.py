"""Tasks the integration tests load into the real stack with JOBS_IMPORT=fixture_tasks."""

from __future__ import annotations

import os
import time
from pathlib import Path

from flask import current_app

from app.jobs import current_job, current_jobs, job, periodic


def _ticks() -> Path:
    return Path(current_app.config["SETTINGS"].data_dir) / "ticks.log"


@periodic("fixture.tick", every=1, max_attempts=1)
def tick() -> int:
    """Appends its period and pid to DATA_DIR/ticks.log: the period it was enqueued for (the end of
    its unique key), not the second it started in, which for a job that waited in a busy spooler
    is the next period's."""
    running = current_job()
    assert running is not None
    key = current_jobs().get(running.id).unique_key
    assert key is not None
    slot = int(key.rsplit(":", 1)[1])
    with _ticks().open("a") as log:
        log.write(f"{slot} {os.getpid()}\n")
    return slot


@job("fixture.stuck", backend="mule", max_attempts=1, timeout=2)
def stuck(seconds: float = 60) -> None:
    """Hangs past its timeout: the mule must be killed."""
    time.sleep(seconds)


@job("fixture.size", max_attempts=1)
def size(blob: str) -> int:
    """The length of its argument: shows large arguments arrive whole."""
    return len(blob)


@job("fixture.held", max_attempts=3)
def held(label: str, log: str, hold: str = "", seconds: float = 0.1) -> str:
    """Waits (at most 60 s) while the file ``hold`` exists, then ``seconds``, then appends
    ``label`` to the file ``log``: a line per attempt that ran to its end."""
    deadline = time.monotonic() + 60
    while hold and os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(seconds)
    with open(log, "a") as file:
        file.write(f"{label}\n")
    return label
