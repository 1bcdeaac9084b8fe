"""Periodic schedules: cron expressions as uWSGI's add_cron takes them, and period slots."""

from __future__ import annotations

import pytest

from app.jobs import JobError, periodic
from app.jobs.periodic import Schedule, parse_cron


def test_cron_fields_map_to_uwsgi_add_cron_arguments() -> None:
    assert parse_cron("*/5 * * * *") == (-5, -1, -1, -1, -1)
    assert parse_cron("30 4 1 * 0") == (30, 4, 1, -1, 0)


@pytest.mark.parametrize("expression", ["* * * *", "5-10 * * * *", "*/0 * * * *", "@daily x y z w"])
def test_unsupported_cron_expressions_are_refused(expression: str) -> None:
    with pytest.raises(JobError, match="cron"):
        parse_cron(expression)


def test_a_period_slot_is_the_start_of_the_period() -> None:
    assert Schedule("t", every=60, cron=None).slot(125.5) == 120
    assert Schedule("t", every=None, cron=(-1, -1, -1, -1, -1)).slot(125.5) == 120


def test_periodic_needs_exactly_one_schedule() -> None:
    with pytest.raises(JobError):
        periodic("x")
    with pytest.raises(JobError):
        periodic("x", every=5, cron="* * * * *")
