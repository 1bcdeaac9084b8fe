"""Commands to the running uWSGI master through its FIFO (``master-fifo`` in uwsgi.ini)."""

from __future__ import annotations

import os
import sys

from app.settings import Settings


def reload(settings: Settings) -> int:
    """Graceful reload of every worker through the master FIFO; 1 when no master listens."""
    fifo = settings.run_dir / "uwsgi.fifo"
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        print(f"no uWSGI master listens on {fifo}: {exc.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as pipe:
        pipe.write("r")
    return 0
