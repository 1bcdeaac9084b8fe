"""uWSGI's stats server, read at scrape time, and what it does not tell: mules and spool files."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ_TIMEOUT = 2.0
# What /api/stats shows of each part: never request variables, command lines, cwd or locks.
WORKER_FIELDS = (
    "id", "pid", "accepting", "requests", "exceptions", "harakiri_count", "status", "rss", "vsz",
    "running_time", "respawn_count", "tx", "avg_rt", "last_spawn",
)  # fmt: skip
SPOOLER_FIELDS = ("pid", "tasks", "respawns", "running")
SOCKET_FIELDS = ("name", "proto", "queue", "max_queue")


def read_stats(host: str, port: int) -> dict[str, Any]:
    """The stats server's JSON document; raises ``OSError`` (or ``ValueError``) when it does not answer."""
    with socket.create_connection((host, port), timeout=READ_TIMEOUT) as sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    stats: dict[str, Any] = json.loads(b"".join(chunks))
    for worker in stats.get("workers", []):
        if not worker.get("rss") and worker.get("pid"):
            worker["rss"], worker["vsz"] = process_memory(int(worker["pid"]))
    return stats


def process_memory(pid: int) -> tuple[int, int]:
    """A process's resident and virtual memory in bytes, from /proc (0, 0 if it is gone).

    uWSGI reads a worker's only for reload-on-rss (after every request: 29 us of 175 us) or
    its memory collector (a thread in every worker, which makes each request 36 us dearer): the
    app reads them here when asked instead (app/monitoring/recycle.py does the recycling)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            size, resident = statm.read().split()[:2]
    except (OSError, ValueError):
        return 0, 0
    page = os.sysconf("SC_PAGE_SIZE")
    return int(resident) * page, int(size) * page


def mule_pids(stats: dict[str, Any]) -> list[int]:
    """The master's children that are neither workers nor spoolers: its mules (no other kind is
    configured), from /proc, since the stats server lists no mules."""
    known = {w["pid"] for w in stats.get("workers", [])} | {s["pid"] for s in stats.get("spoolers", [])}
    children: set[int] = set()
    tasks = Path(f"/proc/{stats['pid']}/task")
    try:
        for task in tasks.iterdir():
            children.update(int(pid) for pid in (task / "children").read_text().split())
    except OSError:
        return []
    return sorted(children - known)


@dataclass(frozen=True)
class SpoolBacklog:
    """Spool files: ``due`` now (waiting for, or taken by, a spooler) and ``later`` (their ``at``,
    the file's mtime, is in the future: a delay or a retry's backoff)."""

    due: int
    later: int


def spool_backlog(spool_dir: Path, now: float | None = None) -> SpoolBacklog:
    """Count the job files in ``spool_dir`` (dot files, the stack's lock, are not jobs)."""
    now = time.time() if now is None else now
    due = later = 0
    with os.scandir(spool_dir) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                if entry.stat(follow_symlinks=False).st_mtime > now:
                    later += 1
                else:
                    due += 1
            except FileNotFoundError:  # run and deleted while we looked
                continue
    return SpoolBacklog(due, later)


def sanitized(stats: dict[str, Any]) -> dict[str, Any]:
    """The parts of the stats document an operator page may show, by whitelist."""
    return {
        "version": stats.get("version"),
        "master_pid": stats.get("pid"),
        "listen_queue": stats.get("listen_queue"),
        "listen_queue_errors": stats.get("listen_queue_errors"),
        "load": stats.get("load"),
        "sockets": [_pick(s, SOCKET_FIELDS) for s in stats.get("sockets", [])],
        "workers": [_pick(w, WORKER_FIELDS) for w in stats.get("workers", [])],
        "spoolers": [_pick(s, SPOOLER_FIELDS) for s in stats.get("spoolers", [])],
    }


def _pick(part: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: part.get(name) for name in names}
