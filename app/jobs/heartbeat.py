"""Heartbeats: each live run of each node says so in the job store, every NODE_TIMEOUT / 6 s.

The writer is a daemon thread in every uWSGI worker, started after the fork. Not the master:
a Python thread started there before the fork deadlocks the workers it respawns later
(unbit/uwsgi#1149). Not a uWSGI timer signal: a worker handles it only between requests, so
a node whose workers are all busy with long requests would stop beating and have its jobs
adopted while it runs them. Not a spooler or mule: long jobs hold them too, and MULES may be 0.
A thread gets the GIL within the interpreter's switch interval (5 ms) even while its worker
runs a request, and a worker stuck in C holding the GIL is only one of several. Each thread
skips its write when a sibling has just written, so a node costs about one write per interval
whatever its number of workers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from app import runtime
from app.jobs import owner

if TYPE_CHECKING:
    from app.jobs.store import JobStore

log = logging.getLogger(__name__)


class Heartbeat:
    """This run's heartbeat: ``beat`` writes it, ``start`` keeps writing it from a thread."""

    def __init__(self, store: JobStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        uwsgi = runtime.uwsgi_module()
        self.started_at = float(uwsgi.started_on) if uwsgi is not None else time.time()
        self.master_pid = uwsgi.masterpid() if uwsgi is not None else None
        self._stopped = threading.Event()

    def beat(self) -> bool:
        """Record this run as alive now, unless another of its processes did within half an
        interval; returns whether it wrote. Raises the database's error when it cannot."""
        me = owner.here()
        last = self.store.last_beat(me.node, me.run)
        if last is not None and time.time() - last < self.interval / 2:
            return False
        self.store.beat(me.node, me.run, self.master_pid or me.pid, self.started_at)
        return True

    def start(self) -> None:
        """Beat now and every interval from a daemon thread of this process (call after the fork)."""
        threading.Thread(target=self._beat_forever, name="heartbeat", daemon=True).start()

    def stop(self) -> None:
        """End this process's heartbeat thread after its current beat."""
        self._stopped.set()

    def _beat_forever(self) -> None:
        failing = False
        while not self._stopped.is_set():
            try:
                self.beat()
            except Exception as exc:  # a database down or a full disk must not end the beats
                if not failing:
                    log.warning(
                        "heartbeat not recorded (other nodes adopt this one's jobs if it lasts): %s", exc
                    )
                failing = True
            else:
                if failing:
                    # As loud as the warning it ends: at LOG_LEVEL=WARNING the recovery shows too.
                    log.warning("heartbeat recorded again")
                failing = False
            self._stopped.wait(self.interval)
