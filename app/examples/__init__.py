"""Examples of real use of the job layer: their tasks (``tasks.py``) and what they keep."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.examples.page_views import PageViews

if TYPE_CHECKING:
    from flask import Flask

    from app.settings import Settings


def init_app(app: Flask, settings: Settings) -> None:
    """Open (and migrate, before the fork) the examples' own database."""
    counter = PageViews(settings.data_dir / "examples.sqlite3")
    counter.migrate()
    app.extensions["page_views"] = counter
