"""Periodic jobs: declared in code, fired by the uWSGI master's timers and cron, run on the spooler.

The master raises a uWSGI signal each period; one worker handles it by enqueueing the task with
a unique key made of its name and the period's start by the clock, so a period yields at most
one job however many workers, signals or restarts there are (a tick that jitters across a
period boundary can merge two periods into one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.jobs.registry import JobError, job

FIRST_SIGNAL = 20


@dataclass(frozen=True)
class Schedule:
    task: str
    every: int | None
    cron: tuple[int, int, int, int, int] | None

    def slot(self, now: float) -> int:
        """The start of the period that ``now`` falls in, as a unix time."""
        step = self.every if self.every else 60
        return int(now // step) * step


schedules: list[Schedule] = []


def parse_cron(expression: str) -> tuple[int, int, int, int, int]:
    """``minute hour day month weekday`` with ``*``, numbers and ``*/N``, as uWSGI's add_cron
    takes them (-1 any, -N every N). Raises ``JobError`` on anything else."""
    parts = expression.split()
    if len(parts) != 5:
        raise JobError(f"cron {expression!r}: expected 5 fields: minute hour day month weekday")
    values = []
    for part in parts:
        if part == "*":
            values.append(-1)
        elif part.startswith("*/") and part[2:].isdigit() and int(part[2:]) > 0:
            values.append(-int(part[2:]))
        elif part.isdigit():
            values.append(int(part))
        else:
            raise JobError(f"cron {expression!r}: field {part!r} is not *, N or */N")
    return values[0], values[1], values[2], values[3], values[4]


def periodic(
    name: str | None = None, *, every: int | None = None, cron: str | None = None, **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a task that runs every ``every`` seconds or on a ``cron`` schedule (UTC).

    Takes the options of ``job`` (but always runs on the spooler). Raises ``JobError`` unless
    exactly one of ``every`` and ``cron`` is given.
    """
    if (every is None) == (cron is None):
        raise JobError("periodic() takes exactly one of every= and cron=")
    if every is not None and every < 1:
        raise JobError("every= must be at least 1 second")
    cron_fields = parse_cron(cron) if cron else None

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        task_name = name or f"{func.__module__}.{func.__qualname__}"
        job(task_name, backend="spooler", **options)(func)
        schedules.append(Schedule(task_name, every, cron_fields))
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
