"""``run``: uWSGI and nginx in the foreground, stopped together.

Ctrl-C or SIGTERM stops both gracefully (exit 0). When either dies on its own, the other is
stopped too and the launcher exits 1 with a line saying which died and how, so that a
supervisor that restarts on failure restarts the stack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.launcher.master import uwsgi_command, uwsgi_env
from app.launcher.probe import START_TIMEOUT, wait_for_socket
from app.settings import Settings

STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Child:
    """A server the launcher started, in a session of its own, and the signal that stops it gracefully."""

    name: str
    process: subprocess.Popen[bytes]
    stop_signal: int


def run(settings: Settings, nginx: str, conf: Path, keep_fds: Sequence[int]) -> int:
    """Start uWSGI, then nginx once uWSGI accepts; return when stopped or when one of them ends."""
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    # Own sessions: Ctrl-C reaches only this launcher, which stops both gracefully. Both hold
    # the stack lock, so the directories stay locked while anything of this stack runs.
    uwsgi = Child(
        "the uWSGI master",
        subprocess.Popen(
            uwsgi_command(keep_fds), env=uwsgi_env(settings), start_new_session=True, pass_fds=keep_fds
        ),
        signal.SIGTERM,
    )
    children = [uwsgi]
    if not wait_for_socket(settings, uwsgi.process):
        return _report_failed_start(uwsgi)
    nginx_process = subprocess.Popen(
        [nginx, "-e", "stderr", "-c", str(conf)], start_new_session=True, pass_fds=keep_fds
    )
    children.append(Child("nginx", nginx_process, signal.SIGQUIT))  # SIGQUIT: graceful stop
    print(
        f"serving on http://{settings.http_host}:{settings.http_port}/ "
        f"(stats: {settings.stats_host}:{settings.stats_port}); Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    dead: Child | None = None
    while not stopping and dead is None:
        time.sleep(0.2)
        dead = next((child for child in children if child.process.poll() is not None), None)
    status = stop(children)
    return _report_death(dead, "while serving") if dead else status


def stop(children: list[Child]) -> int:
    """Ask each child to stop gracefully, kill what is left after STOP_TIMEOUT; the worst exit status."""
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(child.stop_signal)
    deadline = time.monotonic() + STOP_TIMEOUT - 0.5
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
    for child in children:
        # Workers, spoolers and mules of a killed master stay in its session: end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGKILL)
    failures = [c.process.returncode for c in children if c.process.returncode > 0]
    return max(failures, default=0)


def _report_failed_start(uwsgi: Child) -> int:
    """Stop a uWSGI that never accepted connections and say why; the launcher's exit status, 1."""
    slow = uwsgi.process.poll() is None
    stop([uwsgi])
    if not slow:
        return _report_death(uwsgi, "before accepting connections")
    print(
        f"stack stopped: the uWSGI master (pid {uwsgi.process.pid}) did not accept connections "
        f"within {START_TIMEOUT:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return 1


def _report_death(child: Child, when: str) -> int:
    """Print which server ended on its own and how; the launcher's exit status, 1."""
    code = child.process.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    print(
        f"stack stopped: {child.name} (pid {child.process.pid}) {how} {when}",
        file=sys.stderr,
        flush=True,
    )
    return 1
