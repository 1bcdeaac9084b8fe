"""One stack per set of directories: a kernel lock on a file in RUN_DIR, DATA_DIR and SPOOL_DIR.

An ``flock`` belongs to the open file, not to a process: uWSGI inherits it (across exec and
fork) and the kernel releases it when the last holder ends, so a crash never leaves a stale
lock. The locked file also says who holds it, for the refusal a second start prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from app.settings import Settings

LOCK_FILE = ".stack.lock"


class StackRunning(Exception):
    """Another stack holds one of the directories; the message names it and says how to run two."""


def lock_directories(settings: Settings, holder: dict[str, Any]) -> tuple[int, ...]:
    """Lock each directory's lock file and record ``holder`` in it; returns the open descriptors.

    Raises ``StackRunning`` (holding nothing) when another process holds one of them.
    """
    fds: list[int] = []
    try:
        for name, directory in _directories(settings):
            fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StackRunning(_refusal(name, directory, _read_holder(fd))) from None
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    record = json.dumps(holder).encode()
    for fd in fds:
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
    return tuple(fds)


def _directories(settings: Settings) -> list[tuple[str, Path]]:
    """The directories a stack owns, each once (two open files of one lock would exclude each other)."""
    seen: dict[Path, str] = {}
    for name, path in (
        ("RUN_DIR", settings.run_dir),
        ("DATA_DIR", settings.data_dir),
        ("SPOOL_DIR", settings.spool_dir),
    ):
        seen.setdefault(path.resolve(), name)
    return [(name, path) for path, name in seen.items()]


def _read_holder(fd: int) -> dict[str, Any]:
    """What the holder recorded; empty while it has not written yet."""
    with contextlib.suppress(OSError, ValueError):
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(holder, dict):
            return holder
    return {}


def _refusal(name: str, directory: Path, holder: dict[str, Any]) -> str:
    running = [f"launcher pid {holder.get('pid', '?')}"]
    if holder.get("http"):
        running.append(f"HTTP {holder['http']}")
    if holder.get("stats"):
        running.append(f"stats {holder['stats']}")
    return (
        f"another stack is running on {name} {directory} ({', '.join(running)}); "
        "to run a second one, give it its own RUN_DIR, DATA_DIR and SPOOL_DIR (and ports)"
    )
