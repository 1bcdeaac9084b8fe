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

from app.jobs.backends import Backend, QueueFull
from app.jobs.runner import Runner
from app.jobs.store import Job

log = logging.getLogger(__name__)


class MuleBackend:
    name = "mule"

    def __init__(self, uwsgi: ModuleType, later: Backend) -> None:
        self.uwsgi = uwsgi
        self.later = later

    def tag(self) -> str:
        return generation(self.uwsgi)

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
        try:
            job_id = json.loads(message)["job"]
        except (ValueError, KeyError, TypeError):
            log.error("mule message %r is not a job: dropped", message[:200])
            return
        runner.run_once(job_id, retries=self.later, timeout_guard=self.uwsgi.set_user_harakiri)


def generation(uwsgi: ModuleType) -> str:
    """This run of the uWSGI master: its pid and start time, both renewed by a reload, which
    drops the mules' in-memory queue."""
    return f"mule:{uwsgi.masterpid()}:{uwsgi.started_on}"
