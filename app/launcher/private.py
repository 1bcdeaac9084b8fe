"""Private files: job arguments and results are nobody else's to read.

Entry points set ``PRIVATE_UMASK``, so what uWSGI, the app and nginx create is the user's only;
``make_private`` tightens what an earlier version (or another umask) left readable.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from app.settings import Settings

PRIVATE_UMASK = 0o077


def make_private(settings: Settings) -> None:
    """Remove group and other access from the stack's directories and database, where we own them."""
    database = settings.database_path
    for path in (
        settings.run_dir,
        settings.data_dir,
        settings.spool_dir,
        database,
        database.with_name(database.name + "-wal"),
        database.with_name(database.name + "-shm"),
    ):
        _tighten(path)


def _tighten(path: Path) -> None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return
    mode = stat.S_IMODE(status.st_mode)
    if status.st_uid == os.geteuid() and mode & 0o077:
        path.chmod(mode & ~0o077)
