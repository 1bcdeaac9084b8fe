"""The page-view counter of the mule example: a table of the example's own, in a database file
of its own (DATA_DIR/examples.sqlite3) with its own migrations, apart from the job store."""

from __future__ import annotations

from pathlib import Path

from flask import current_app

from app.db import SqliteDatabase

MIGRATIONS: tuple[str, ...] = (
    # 1: a count per page.
    """
    CREATE TABLE page_views (
        page TEXT PRIMARY KEY,
        views INTEGER NOT NULL
    );
    """,
)


class PageViews:
    """Views per page; safe from any process or thread."""

    def __init__(self, path: Path) -> None:
        self.db = SqliteDatabase(path, MIGRATIONS)

    def migrate(self) -> None:
        self.db.migrate()

    def count(self, page: str) -> int:
        """Add a view of ``page``; returns its views so far."""
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO page_views (page, views) VALUES (?, 1)"
                " ON CONFLICT (page) DO UPDATE SET views = views + 1",
                (page,),
            )
            row = tx.execute("SELECT views FROM page_views WHERE page = ?", (page,)).fetchone()
        return int(row["views"])

    def views(self, page: str) -> int:
        """The views of ``page`` counted so far."""
        rows = self.db.read("SELECT views FROM page_views WHERE page = ?", (page,))
        return int(rows[0]["views"]) if rows else 0


def page_views() -> PageViews:
    """The current app's counter."""
    counter: PageViews = current_app.extensions["page_views"]
    return counter
