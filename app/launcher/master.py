"""The uWSGI master: its command line and the environment ``uwsgi.ini`` reads."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from app.monitoring.metrics import MULTIPROC_ENV, metrics_dir
from app.settings import PROJECT_ROOT, SECRETS, Settings


def uwsgi_command(keep_fds: Sequence[int] = ()) -> list[str]:
    """The command that starts the master with uwsgi.ini; ``keep_fds`` survive its start and reloads."""
    binary = Path(sys.executable).parent / "uwsgi"
    command = [str(binary if binary.exists() else "uwsgi"), "--ini", str(PROJECT_ROOT / "uwsgi.ini")]
    for fd in keep_fds:
        # uWSGI closes every descriptor it does not know at start and on each reload.
        command += ["--safe-fd", str(fd)]
    return command


def uwsgi_env(settings: Settings) -> dict[str, str]:
    """The environment uwsgi.ini reads; options uWSGI parses before expanding $(NAME)
    ("immediate" ones) are passed as UWSGI_<OPTION> variables instead."""
    # A secret read from NAME_FILE goes on as NAME, the value read: both set would be refused.
    inherited = {key: value for key, value in os.environ.items() if key.removesuffix("_FILE") not in SECRETS}
    return {
        **inherited,
        **settings.as_env(),
        "UWSGI_LISTEN": str(settings.listen_backlog),
        "UWSGI_SPOOLER_PROCESSES": str(settings.spooler_processes),
        "PYTHON_BINARY": sys.executable,
        # Every process of the stack writes its counters there; /metrics sums them.
        MULTIPROC_ENV: str(metrics_dir(settings.run_dir)),
    }


def exec_uwsgi(settings: Settings, keep_fds: Sequence[int]) -> NoReturn:
    """Replace this process with the uWSGI master, which inherits ``keep_fds`` (the stack lock)."""
    for fd in keep_fds:
        os.set_inheritable(fd, True)
    command = uwsgi_command(keep_fds)
    os.execve(shutil.which(command[0]) or command[0], command, uwsgi_env(settings))
