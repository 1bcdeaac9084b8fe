"""Whether this process runs under uWSGI, and whether it is the master."""

from __future__ import annotations

import os
from types import ModuleType


def uwsgi_module() -> ModuleType | None:
    """The ``uwsgi`` module when running under uWSGI, else None (``flask run``, tests)."""
    try:
        import uwsgi
    except ImportError:
        return None
    return uwsgi


def is_master() -> bool:
    """Whether this is the uWSGI master (loading the app before the fork), not a worker,
    spooler or mule, nor a process outside uWSGI."""
    uwsgi = uwsgi_module()
    if uwsgi is None or uwsgi.mule_id() > 0 or uwsgi.i_am_the_spooler() or uwsgi.worker_id() > 0:
        return False
    return os.getpid() == uwsgi.masterpid()
