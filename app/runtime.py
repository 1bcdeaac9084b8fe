"""What this process is inside uWSGI: a worker, a spooler, a mule, the master, or not uWSGI at all."""

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


def process_role() -> str:
    """``worker``, ``spooler``, ``mule``, ``master`` or ``local`` (not under uWSGI)."""
    uwsgi = uwsgi_module()
    if uwsgi is None:
        return "local"
    if uwsgi.mule_id() > 0:
        return "mule"
    if uwsgi.i_am_the_spooler():
        return "spooler"
    if uwsgi.worker_id() > 0:
        return "worker"
    return "master" if os.getpid() == uwsgi.masterpid() else "worker"
