"""Periodic jobs: declared in code, fired by the uWSGI master's timers and cron, run on the spooler.

The master raises a uWSGI signal each period; one worker handles it by enqueueing the task with
a unique key made of its name and the period's start by the clock, so a period yields at most
one job however many workers, signals or restarts there are (a tick that jitters across a
period boundary can merge two periods into one). Nodes sharing a store share the keys, so a
period yields one job across them all; a ``per_node`` task's key also names the node, so that
each node runs it once per period (the reaper: only a node can check its own processes).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.jobs.errors import JobError
from app.jobs.registry import job

FIRST_SIGNAL = 20
# uWSGI's add_cron fields, in order, with the values each takes (uWSGI counts months from 1).
CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day", 1, 31), ("month", 1, 12), ("weekday", 0, 6))
CRON_NUMBER = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Schedule:
    task: str
    every: int | None
    cron: tuple[int, int, int, int, int] | None
    per_node: bool = False

    def slot(self, now: float) -> int:
        """The start of the period that ``now`` falls in, as a unix time."""
        step = self.every if self.every else 60
        return int(now // step) * step


schedules: list[Schedule] = []


def parse_cron(expression: str) -> tuple[int, int, int, int, int]:
    """``minute hour day month weekday`` with ``*``, numbers and ``*/N``, as uWSGI's add_cron
    takes them (-1 any, -N every N: the values divisible by N, as uWSGI matches them; weekday 0
    is Sunday). Raises ``JobError`` on anything else, naming the field and its range."""
    parts = expression.split()
    if len(parts) != len(CRON_FIELDS):
        raise JobError(f"cron {expression!r}: expected 5 fields: minute hour day month weekday")
    values = []
    for part, (field, low, high) in zip(parts, CRON_FIELDS, strict=True):
        step = part.removeprefix("*/")
        if part == "*":
            values.append(-1)
        elif step != part and CRON_NUMBER.fullmatch(step):
            # A step above the field's largest value would match 0 alone, or nothing.
            if not 1 <= int(step) <= high:
                raise JobError(f"cron {expression!r}: {field} step {part} is out of range 1-{high}")
            values.append(-int(step))
        elif CRON_NUMBER.fullmatch(part):
            if not low <= int(part) <= high:
                raise JobError(f"cron {expression!r}: {field} {part} is out of range {low}-{high}")
            values.append(int(part))
        else:
            raise JobError(f"cron {expression!r}: {field} {part!r} is not *, N or */N")
    return values[0], values[1], values[2], values[3], values[4]


def periodic(
    name: str | None = None,
    *,
    every: int | None = None,
    cron: str | None = None,
    backend: str = "spooler",
    per_node: bool = False,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a task that runs every ``every`` seconds or on a ``cron`` schedule (the master's
    local time, as uWSGI reads its clock; UTC in the image).

    Runs once per period across the nodes sharing the store, or on each node with ``per_node``.
    Takes the options of ``job``; ``backend`` can only be the spooler, whose unique keys make a
    period yield one job. Raises ``JobError`` on a bad option, or unless exactly one of ``every``
    and ``cron`` is given.
    """
    if backend != "spooler":
        raise JobError(f"periodic tasks run on the spooler: backend must be 'spooler', got {backend!r}")
    if (every is None) == (cron is None):
        raise JobError("periodic() takes exactly one of every= and cron=")
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise JobError(f"every= must be a whole number of seconds, at least 1, got {every!r}")
    cron_fields = parse_cron(cron) if cron else None
    register = job(name, backend=backend, **options)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        register(func)
        task = name or f"{func.__module__}.{func.__qualname__}"
        schedules.append(Schedule(task, every, cron_fields, per_node))
        return func

    return decorate


def install(uwsgi: Any, fire: Callable[[Schedule, int], None]) -> None:
    """Register each schedule with the uWSGI master (call in the master, before the fork)."""
    for offset, schedule in enumerate(schedules):
        signum = FIRST_SIGNAL + offset

        def handler(_signum: int, schedule: Schedule = schedule) -> None:
            fire(schedule, schedule.slot(time.time()))

        uwsgi.register_signal(signum, "worker", handler)
        if schedule.every:
            uwsgi.add_timer(signum, schedule.every)
        else:
            assert schedule.cron is not None
            uwsgi.add_cron(signum, *schedule.cron)
