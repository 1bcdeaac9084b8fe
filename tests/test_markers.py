"""The suite's own rule: a test that starts a server carries a marker, so ``make unit`` starts none."""

from __future__ import annotations

import pytest

pytest_plugins = ("pytester",)

UNMARKED = """
import pytest

def test_on_the_shared_stack(stack):
    raise AssertionError("the stack was started")

def test_on_a_stack_of_its_own(make_stack):
    raise AssertionError("a stack was started")

@pytest.mark.integration
def test_marked(stack):
    pass
"""


def test_a_test_that_starts_a_server_without_a_marker_fails_before_starting_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_unmarked=UNMARKED)
    result = pytester.runpytest_inprocess("-p", "tests.conftest", "-m", "not integration")
    result.assert_outcomes(errors=2, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*test_on_the_shared_stack uses nginx_present, stack, which start servers, but has none of*",
            "*test_on_a_stack_of_its_own uses make_stack, nginx_present, which start servers,*",
        ]
    )
    result.stdout.no_fnmatch_line("*was started*")
