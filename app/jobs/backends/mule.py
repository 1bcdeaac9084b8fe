"""uWSGI mules: long-lived processes fed through an in-memory message queue.

Fast, and at most once: a message lives only in a socket buffer, so a mule's death or a
reload loses it (the reaper then marks the job failed). A full queue is never a silent drop:
``submit`` raises ``QueueFull`` and the caller decides (the task's ``on_full``).
"""

from __future__ import annotations

import json
import logging
import time
from types import ModuleType
from typing import Any

from app.jobs import owner
from app.jobs.backends import Backend, lost_with_owner
from app.jobs.errors import QueueFull
from app.jobs.metrics import MULE_MESSAGES
from app.jobs.runner import Runner
from app.jobs.store import Job

log = logging.getLogger(__name__)


class MuleBackend:
    name = "mule"
    volatile = True

    def __init__(self, uwsgi: ModuleType, later: Backend) -> None:
        self.uwsgi = uwsgi
        self.later = later

    def new_handle(self) -> str:
        """The master of this run: it holds the mules' queue, which its reload or restart drops."""
        return str(owner.master())

    def lost(self, job: Job) -> dict[str, Any] | None:
        return lost_with_owner(job, "uWSGI reloaded or restarted, dropping the mule queue")

    def cancel(self, job: Job) -> None:
        """Nothing to drop: the message stays queued, and the mule skips a cancelled job."""

    def changes_record(self, job: Job, at: float | None) -> bool:
        """A mule may start the job before ``submit`` returns."""
        return True

    def submit(self, job: Job, at: float | None = None) -> None:
        """Send the job id to the mules' shared queue; raises ``QueueFull`` when it is full."""
        if at is not None and at > time.time():
            # A mule cannot hold a job until later without blocking; the spooler can.
            self.later.submit(job, at)
            return
        sent = self.uwsgi.mule_msg(json.dumps({"job": job.id}).encode())
        if not sent:
            raise QueueFull("the mule queue is full (see mule-msg-size in uwsgi.ini)")

    def handle(self, runner: Runner, message: bytes) -> None:
        """``uwsgi.mule_msg_hook``: runs one job; never raises (uWSGI would only print it)."""
        MULE_MESSAGES.labels(str(self.uwsgi.mule_id())).inc()
        try:
            job_id = json.loads(message)["job"]
        except (ValueError, KeyError, TypeError):
            log.error("mule message %r is not a job: dropped", message[:200])
            return
        runner.run_once(job_id, retries=self.later, timeout_guard=self.uwsgi.set_user_harakiri)
