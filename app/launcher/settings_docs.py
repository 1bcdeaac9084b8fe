"""The settings' documentation, generated from their declarations in app/settings.py.

README.md holds the two tables between markers, and docker-compose.yml the header; the tests
check both against this output (``python -m app.serve settings --format ...`` prints it).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from app.settings import COMPOSE_ONLY, SETTINGS, Compose

HEADER = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]


def native_table() -> str:
    """A Markdown table of the app's settings: each variable, its default and its meaning."""
    rows = [_row(name, s.shown_default(), s.meaning) for name, s in SETTINGS.items()]
    return "\n".join(HEADER + rows)


def compose_table() -> str:
    """A Markdown table of the variables under Compose: the stack's own, the app's, the image's."""
    rows = [_row(name, c.default or "", c.meaning or "") for name, c in _compose_own().items()]
    rows += [_row(name, SETTINGS[name].shown_default(), SETTINGS[name].meaning) for name in _passed()]
    for name, image in _fixed().items():
        rows.append(f"| `{name}` | `{image}`, fixed by the image | {SETTINGS[name].meaning} |")
    return "\n".join(HEADER + rows)


def compose_header() -> str:
    """docker-compose.yml's header comment on settings, from its line "# Settings come from"."""
    own = _compose_own()
    width = max(len(c.default or "") for c in own.values()) + 2
    lines = ["Settings come from the environment or an env file (.env by default). The stack's own:"]
    lines += [f"  {name:<21}{(c.default or '(none)'):<{width}}{c.meaning}" for name, c in own.items()]
    lines.append("The app's, passed through to it (unset or empty: the defaults of app/settings.py):")
    lines += textwrap.wrap(" ".join(_passed()), 96, initial_indent="  ", subsequent_indent="  ")
    lines.append("Fixed by the image in the app's container:")
    fixed = " ".join(f"{name}={image}" for name, image in _fixed().items())
    lines += textwrap.wrap(fixed, 96, initial_indent="  ", subsequent_indent="  ")
    lines.append("`python -m app.serve settings --format compose` lists them all with their meanings.")
    return "\n".join(f"# {line}".rstrip() for line in lines)


FORMATS: dict[str, Callable[[], str]] = {
    "native": native_table,
    "compose": compose_table,
    "compose-header": compose_header,
}


def _row(name: str, default: str, meaning: str) -> str:
    shown = f"`{default}`" if default else "(none)"
    return f"| `{name}` | {shown} | {meaning} |"


def _compose_own() -> dict[str, Compose]:
    """The variables Compose reads itself, with its own defaults and meanings."""
    own = {name: s.compose for name, s in SETTINGS.items() if s.compose and s.compose.default is not None}
    return {**own, **COMPOSE_ONLY}


def _passed() -> list[str]:
    """The app's settings that Compose passes to its container."""
    return [name for name, s in SETTINGS.items() if s.compose and s.compose.passed]


def _fixed() -> dict[str, str]:
    """The app's settings that its image fixes and Compose does not set: their values."""
    return {
        name: s.compose.image
        for name, s in SETTINGS.items()
        if s.compose and s.compose.image is not None and s.compose.default is None
    }
