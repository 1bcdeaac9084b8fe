"""Private files: job arguments and results are nobody else's to read.

Entry points set ``PRIVATE_UMASK``, so what uWSGI, the app and nginx create is the user's only;
``make_private`` tightens what an earlier version (or another umask) left readable.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from app.db import database_files
from app.settings import Settings

PRIVATE_UMASK = 0o077


def make_private(settings: Settings) -> None:
    """Remove group and other access from the stack's directories and database, where we own them."""
    for path in (
        settings.run_dir,
        settings.data_dir,
        settings.spool_dir,
        *database_files(settings.database_path),
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
