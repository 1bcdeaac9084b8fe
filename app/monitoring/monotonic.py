"""uWSGI's counters made monotonic across the master's reloads and the workers' respawns.

The stats server's counters (requests, exceptions, harakiri kills, respawns) live in the master's
shared memory: a graceful reload starts them again from zero. Every scrape, whichever worker
answers it, passes them through one small file under the metrics directory (wiped only when
the stack starts): a value lower than the last one seen means its counter restarted, and the
last value joins what is carried over from before.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Mapping
from pathlib import Path

STATE_FILE = "uwsgi-counters.json"


def monotonic(metrics_dir: Path, counters: Mapping[str, float]) -> dict[str, float]:
    """``counters`` (by a key naming the series) plus what each carried over from before its
    restarts; updates the state file under an exclusive lock, so concurrent scrapes agree."""
    path = metrics_dir / STATE_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+") as state_file:
        fcntl.flock(state_file, fcntl.LOCK_EX)
        try:
            state = json.loads(state_file.read() or "{}")
        except ValueError:
            state = {}
        last: dict[str, float] = state.get("last", {})
        carried: dict[str, float] = state.get("carried", {})
        result = {}
        for key, value in counters.items():
            if value < last.get(key, 0):
                carried[key] = carried.get(key, 0) + last[key]
            last[key] = value
            result[key] = carried.get(key, 0) + value
        state_file.seek(0)
        state_file.truncate()
        state_file.write(json.dumps({"last": last, "carried": carried}))
    return result
