"""Periodic schedules: cron expressions as uWSGI's add_cron takes them, and period slots."""

from __future__ import annotations

import importlib

import pytest

from app.jobs import JobError, periodic
from app.jobs.periodic import Schedule, parse_cron
from app.jobs.registry import TaskRegistry

# The modules themselves: ``app.jobs.periodic`` as an attribute is the decorator.
periodic_module = importlib.import_module("app.jobs.periodic")
registry_module = importlib.import_module("app.jobs.registry")


def test_cron_fields_map_to_uwsgi_add_cron_arguments() -> None:
    assert parse_cron("*/5 * * * *") == (-5, -1, -1, -1, -1)
    assert parse_cron("30 4 1 * 0") == (30, 4, 1, -1, 0)


@pytest.mark.parametrize(
    "expression",
    ["* * * *", "5-10 * * * *", "*/0 * * * *", "@daily x y z w", "\u00b2 * * * *", "*/-5 * * * *"],
)
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


@pytest.mark.parametrize(
    ("expression", "field", "limits"),
    [
        ("99 99 99 99 99", "minute", "0-59"),
        ("60 * * * *", "minute", "0-59"),
        ("* 24 * * *", "hour", "0-23"),
        ("* * 0 * *", "day", "1-31"),
        ("* * 32 * *", "day", "1-31"),
        ("* * * 0 *", "month", "1-12"),
        ("* * * 13 *", "month", "1-12"),
        ("* * * * 7", "weekday", "0-6"),
        ("*/60 * * * *", "minute", "1-59"),
        ("* * * */13 *", "month", "1-12"),
    ],
)
def test_cron_fields_out_of_range_are_refused_naming_the_field_and_its_range(
    expression: str, field: str, limits: str
) -> None:
    with pytest.raises(JobError, match=f"{field} .* {limits}"):
        parse_cron(expression)


def test_cron_fields_at_the_ends_of_their_ranges_are_accepted() -> None:
    assert parse_cron("0 0 1 1 0") == (0, 0, 1, 1, 0)
    assert parse_cron("59 23 31 12 6") == (59, 23, 31, 12, 6)
    assert parse_cron("*/59 */23 */31 */12 */6") == (-59, -23, -31, -12, -6)


def noop() -> None:
    """A periodic task body that is never run."""


def test_periodic_refuses_a_backend_other_than_the_spooler_with_a_clear_error() -> None:
    with pytest.raises(JobError, match="spooler"):
        periodic("tests.periodic.on_a_mule", every=5, backend="mule")(noop)


def test_periodic_accepts_the_spooler_named_as_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(periodic_module, "schedules", [])
    monkeypatch.setattr(registry_module, "registry", TaskRegistry())
    periodic("tests.periodic.spooled", every=5, backend="spooler")(noop)
    assert registry_module.registry.get("tests.periodic.spooled").backend == "spooler"
    assert periodic_module.schedules == [Schedule("tests.periodic.spooled", every=5, cron=None)]


@pytest.mark.parametrize("max_attempts", [0, 101, 2.5, True])
def test_periodic_caps_max_attempts_like_the_api(max_attempts: object) -> None:
    with pytest.raises(JobError, match="max_attempts must be a whole number from 1 to 100"):
        periodic("tests.periodic.capped", every=5, max_attempts=max_attempts)(noop)


@pytest.mark.parametrize("every", [0, 2.5, True, "60"])
def test_periodic_every_must_be_a_whole_number_of_seconds(every: object) -> None:
    with pytest.raises(JobError, match="every="):
        periodic("tests.periodic.every", every=every)(noop)  # type: ignore[arg-type]
