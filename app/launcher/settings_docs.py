"""The README's table of settings, generated from app/settings.py."""

from __future__ import annotations

from app.settings import SETTINGS


def settings_table() -> str:
    """A Markdown table: each variable, its default and its meaning."""
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        default = setting.default()
        if setting.name == "PROCESSES":
            default = "2 × CPU cores"
        elif setting.name == "LISTEN_BACKLOG":
            default = "min(1024, somaxconn)"
        shown = f"`{default}`" if default else "(none)"
        lines.append(f"| `{setting.name}` | {shown} | {setting.meaning} |")
    return "\n".join(lines)
