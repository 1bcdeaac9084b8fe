"""The job queues compared with this stack. Each module defines a no-op task ``noop(sent)``
that does nothing but note, in the worker, when it started (``stamp``): queue wait is that
minus ``sent``, the producer's clock when it enqueued the job (one machine, one clock)."""

from __future__ import annotations

import os
import time
from pathlib import Path

_fd: int | None = None
_pid = 0


def stamp(sent: float) -> None:
    """Append "sent started" to this process's file in BENCH_STAMPS (one write, no buffer)."""
    global _fd, _pid
    if _fd is None or _pid != os.getpid():
        _pid = os.getpid()
        path = Path(os.environ["BENCH_STAMPS"]) / f"{_pid}.txt"
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.write(_fd, f"{sent!r} {time.time()!r}\n".encode())


def read_stamps(folder: Path) -> list[tuple[float, float]]:
    """Every (sent, started) pair the workers noted."""
    pairs = []
    for file in folder.glob("*.txt"):
        for line in file.read_text().splitlines():
            sent, _, started = line.partition(" ")
            if started:
                pairs.append((float(sent), float(started)))
    return pairs
