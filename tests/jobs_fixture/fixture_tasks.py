"""Tasks the integration tests load into the real stack with JOBS_IMPORT=fixture_tasks."""

from __future__ import annotations

import os
import time
from pathlib import Path

from flask import current_app

from app.jobs import job, periodic


def _ticks() -> Path:
    return Path(current_app.config["SETTINGS"].data_dir) / "ticks.log"


@periodic("fixture.tick", every=1, max_attempts=1)
def tick() -> int:
    """Appends its period and pid to DATA_DIR/ticks.log."""
    slot = int(time.time())
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
