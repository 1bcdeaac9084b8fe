"""Which process holds a job: its node, the run of the uWSGI master it belongs to, and its pid.

A pid alone says nothing across restarts: a restarted container gives its processes the same
small pids, so "process 7 is alive" may be a new process, not the one that took the job. The
run (the master's pid and start time) changes with every start and reload of the master, so a
job whose owner's run is not the current one was held by a process that is gone. The node
(NODE_NAME; by default the name kept in SPOOL_DIR, the host name of its first start) scopes
pids to a machine: only that node can check them.
Nodes sharing a store judge each other by heartbeats instead (``app.jobs.heartbeat``): an
owner on another node is alive while its run beats, and gone once the beat is NODE_TIMEOUT old
or was never seen (a previous identity of this machine, such as a recreated container).

The identity is the process's, like its pid: ``configure`` sets it once per process (the job
layer does, from its settings).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from app import runtime


@dataclass(frozen=True)
class Owner:
    """A process that can hold a job, named so that the name is never reused."""

    node: str
    run: str
    pid: int

    def __str__(self) -> str:
        return f"{self.node}/{self.run}/{self.pid}"

    @classmethod
    def parse(cls, text: str | None) -> Owner | None:
        """The owner ``str(owner)`` wrote, or None for anything else (records of older versions)."""
        node, _, rest = (text or "").partition("/")
        run, _, pid = rest.rpartition("/")
        if not (node and run and pid.isdigit()):
            return None
        return cls(node, run, int(pid))


# Each (node, run)'s last heartbeat, as the store holds them.
Beats = Mapping[tuple[str, str], float]
# How long a process trusts the heartbeats it read: claims and the reaper read them at most this often.
BEATS_CACHE_SECONDS = 1.0


def _no_beats() -> Beats:
    return {}


@dataclass
class _Identity:
    node: str = ""
    read_beats: Callable[[], Beats] = _no_beats
    timeout: float = 30.0
    beats: Beats | None = None
    read_at: float = 0.0


_identity = _Identity()
_beats_lock = threading.Lock()


def configure(node: str, read_beats: Callable[[], Beats], timeout: float) -> None:
    """Name this process's node (empty: the host name), say where the heartbeats are read, and
    after how many seconds without one a run is dead."""
    global _identity
    _identity = _Identity(node, read_beats, timeout)


# In SPOOL_DIR: the name of the node its spool files belong to (uWSGI runs only files named
# uwsgi_spoolfile_on_*, so the spooler never takes it for a job).
NODE_FILE = ".node"


def spool_node_name(spool_dir: Path) -> str:
    """The node that owns ``spool_dir``: the name a previous start wrote there, or this host's
    name, written for the next start. A container recreated on the same spool volume gets a new
    host name, but its spool files (and so its jobs) are still this node's: keeping the name
    makes its previous run gone at once (another run of this node), instead of a node that must
    first miss NODE_TIMEOUT of heartbeats. Falls back to the host name if the file can't be kept."""
    path = spool_dir / NODE_FILE
    name = host_name()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            kept = path.read_text().strip()
        except OSError:
            return name
        return kept if kept and "/" not in kept else name
    except OSError:
        return name
    with os.fdopen(fd, "w") as file:
        file.write(name + "\n")
    return name


@cache
def host_name() -> str:
    """This machine (or container): its host name."""
    return socket.gethostname()


def node_id() -> str:
    """This node: NODE_NAME, or the name kept in SPOOL_DIR (``spool_node_name``), or the host name."""
    return _identity.node or host_name()


def heartbeat_timeout() -> float:
    """Seconds without a heartbeat after which a run is dead (NODE_TIMEOUT)."""
    return _identity.timeout


def beats() -> Beats:
    """Every run's last heartbeat, read at most once per ``BEATS_CACHE_SECONDS`` by this process."""
    identity = _identity
    with _beats_lock:
        now = time.monotonic()
        if identity.beats is None or now - identity.read_at >= BEATS_CACHE_SECONDS:
            identity.beats = identity.read_beats()
            identity.read_at = now
        return identity.beats


def run_alive(node: str, run: str) -> bool:
    """Whether run ``run`` of another node beat within the timeout."""
    beat = beats().get((node, run))
    return beat is not None and time.time() - beat < _identity.timeout


def node_alive(node: str) -> bool:
    """Whether ``node`` is this one or one of its runs beat within the timeout."""
    if node == node_id():
        return True
    cutoff = time.time() - _identity.timeout
    return any(name == node and beat > cutoff for (name, _), beat in beats().items())


def dead_nodes() -> list[str]:
    """The other nodes that beat once and whose every run has stopped beating."""
    cutoff = time.time() - _identity.timeout
    last: dict[str, float] = {}
    for (name, _), beat in beats().items():
        last[name] = max(beat, last.get(name, beat))
    return sorted(name for name, beat in last.items() if beat <= cutoff and name != node_id())


@cache
def _local_run() -> str:
    # Without uWSGI (flask run, the CLI, tests) the run is this process's life.
    return f"local-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def current_run() -> str:
    """This start of the uWSGI master, shared by every process it forks; renewed by a reload
    (pyuwsgi re-executes the master) or a restart."""
    uwsgi = runtime.uwsgi_module()
    if uwsgi is None:
        return _local_run()
    return f"{uwsgi.masterpid()}.{uwsgi.started_on}"


def here(pid: int | None = None) -> Owner:
    """This process as an owner, or process ``pid`` of this run."""
    return Owner(node_id(), current_run(), os.getpid() if pid is None else pid)


def master() -> Owner:
    """The uWSGI master of this run (which holds the mules' message queue)."""
    uwsgi = runtime.uwsgi_module()
    return here(uwsgi.masterpid() if uwsgi is not None else None)


def alive(owner: Owner | None) -> bool:
    """Whether the process ``owner`` names still runs; an unknown owner (None) is gone.

    On this node: its run must be the current one and its pid alive. On another node, which
    alone can check its pids: its run must still beat."""
    if owner is None:
        return False
    me = here()
    if owner.node != me.node:
        return run_alive(owner.node, owner.run)
    if owner.run != me.run:
        return False
    return owner.pid == me.pid or _process_exists(owner.pid)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
