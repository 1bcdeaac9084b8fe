"""The WSGI callable uWSGI loads (``module = app.wsgi:app``); also ``flask --app app.wsgi``."""

from __future__ import annotations

import gc
import os
import sys

from app import create_app
from app.launcher.private import PRIVATE_UMASK
from app.monitoring.logs import configure_logging
from app.monitoring.metrics import use_multiprocess_files
from app.settings import Settings, SettingsError
from app.web.shedding import QueueShedding

# An entry point: the process's file modes and log format are set here, not by the factory.
os.umask(PRIVATE_UMASK)
use_multiprocess_files()

try:
    settings = Settings.from_env()
    # Lines below LOG_LEVEL are never formatted nor handed to uWSGI's log pipe.
    configure_logging(settings.log_level)
    app = create_app(settings)
except SettingsError as exc:
    # One line naming the variable, then stop: uWSGI's need-app ends the start-up.
    print(f"configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None

# Requests that waited too long, or whose client left, are shed before Flask sees them.
app.wsgi_app = QueueShedding(app.wsgi_app, app.config["SETTINGS"].queue_timeout)  # type: ignore[method-assign]

# Everything loaded so far is shared with the workers uWSGI forks from this process (lazy-apps =
# false): move it out of the garbage collector's reach, so that a collection in a worker does
# not write to every object's header and copy the shared pages into each worker.
gc.freeze()
