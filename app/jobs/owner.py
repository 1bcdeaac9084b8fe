"""Which process holds a job: its node, the run of the uWSGI master it belongs to, and its pid.

A pid alone says nothing across restarts: a restarted container gives its processes the same
small pids, so "process 7 is alive" may be a new process, not the one that took the job. The
run (the master's pid and start time) changes with every start and reload of the master, so a
job whose owner's run is not the current one was held by a process that is gone. The node
(the host name) scopes pids to a machine; one SQLite store serves one machine, so an owner on
another node is a previous identity of this one (a recreated container) and is gone too.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from functools import cache

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


@cache
def node_id() -> str:
    """This machine (or container): its host name."""
    return socket.gethostname()


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
    """Whether the process ``owner`` names still runs; an unknown owner (None) is gone."""
    if owner is None:
        return False
    me = here()
    if (owner.node, owner.run) != (me.node, me.run):
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
