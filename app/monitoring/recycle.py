"""Recycle a worker whose memory grew past RELOAD_ON_RSS, looked at every ``CHECK_EVERY`` requests.

uWSGI's own ``reload-on-rss`` reads ``/proc/self/stat`` after every request: 29 us of the
worker's 175 us of CPU per ``GET /api/info`` (notes/README-perf.md), the dearest option of
uwsgi.ini. This reads ``/proc/self/statm`` every 64th request instead and, above the limit,
recycles the worker as uWSGI would: SIGHUP to the request's own thread makes uWSGI finish the
request, end the worker and fork a fresh one (its ``gracefully_kill``, as in a reload). Like
uWSGI, it leaves alone a worker younger than ``min-worker-lifetime`` (10 s unless set), so that
a limit below a fresh worker's size recycles every 10 s, not in a loop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import ModuleType

log = logging.getLogger(__name__)

CHECK_EVERY = 64
# uWSGI's default min-worker-lifetime (core/uwsgi.c): no worker is recycled younger than this.
MIN_WORKER_LIFETIME = 10.0


def resident_bytes() -> int:
    """This process's resident memory, from /proc/self/statm (one small read)."""
    fd = os.open("/proc/self/statm", os.O_RDONLY)
    try:
        fields = os.read(fd, 128).split()
    finally:
        os.close(fd)
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def min_worker_lifetime(uwsgi: ModuleType) -> float:
    """uWSGI's ``min-worker-lifetime`` option (UWSGI_MIN_WORKER_LIFETIME), else its default."""
    value = uwsgi.opt.get("min-worker-lifetime")
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return float(value) if value not in (None, True) else MIN_WORKER_LIFETIME
    except ValueError:
        return MIN_WORKER_LIFETIME


class RssGuard:
    """Counts requests; every ``CHECK_EVERY`` th, recycles the worker if its RSS is over the limit."""

    def __init__(self, limit_mb: int, uwsgi: ModuleType) -> None:
        self.limit = limit_mb * 1024 * 1024
        self.uwsgi = uwsgi
        self.min_age = min_worker_lifetime(uwsgi)
        self.countdown = CHECK_EVERY
        # The app is loaded in the master and forked: each worker looks up its own spawn time.
        self.pid = 0
        self.born = 0.0
        self.recycling = False

    def spawned(self, now: float) -> float:
        """When uWSGI spawned this worker (unix time), from its worker table; else ``now``."""
        for worker in self.uwsgi.workers():
            if worker.get("id") == self.uwsgi.worker_id():
                return float(worker.get("last_spawn") or now)
        return now

    def request_done(self) -> None:
        """Called once per request, in the request: cheap except every ``CHECK_EVERY`` th call."""
        self.countdown -= 1
        if self.countdown > 0:
            return
        self.countdown = CHECK_EVERY
        self.check()

    def check(self) -> None:
        now = time.time()
        if self.pid != os.getpid():
            self.pid, self.born, self.recycling = os.getpid(), self.spawned(now), False
        if self.recycling or now - self.born < self.min_age:
            return
        rss = resident_bytes()
        if rss <= self.limit:
            return
        self.recycling = True
        log.warning(
            "worker %s: resident memory %d MB is over RELOAD_ON_RSS (%d MB): recycled after this request",
            self.uwsgi.worker_id(),
            rss // (1024 * 1024),
            self.limit // (1024 * 1024),
        )
        # To this thread: uWSGI's handler looks up the request this thread runs.
        signal.pthread_kill(threading.get_ident(), signal.SIGHUP)
