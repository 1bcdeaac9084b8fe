"""Load shedding: a request nobody waits for any more is answered 503 at once, never run.

Under a burst, requests wait in uWSGI's listen queue. nginx gives up on them after its read
timeout (``Settings.upstream_timeout``, HARAKIRI + 5 s) and its client may leave sooner, but
uWSGI would still run each one later, keeping the stack busy with work nobody reads. This
middleware runs before Flask and sheds a request that waited longer than ``queue_timeout``
seconds (nginx stamps each request with ``X-Request-Start: t=<unix time>`` as it hands it
over, overriding any client's copy) or whose upstream connection nginx has already closed.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from app import runtime

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

RETRY_AFTER = "2"


def queued_seconds(environ: WSGIEnvironment, now: float) -> float | None:
    """How long the request waited since nginx stamped it, or None without a usable stamp."""
    stamp = environ.get("HTTP_X_REQUEST_START", "")
    try:
        started = float(stamp.removeprefix("t="))
    except ValueError:
        return None
    return max(0.0, now - started)


def upstream_closed() -> bool:
    """True when nginx has closed this request's connection to uWSGI (its client left, or it
    timed out); False when it is open, or when not under uWSGI."""
    uwsgi = runtime.uwsgi_module()
    if uwsgi is None:
        return False
    try:
        # uWSGI's own fd, wrapped without a dup() and let go (detach) rather than closed.
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, uwsgi.connection_fd())
    except OSError:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, and no body bytes pending
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE)
    finally:
        conn.detach()


class QueueShedding:
    """WSGI middleware: answer 503 (JSON, Retry-After) instead of running a request that waited
    longer than ``queue_timeout`` seconds or whose client is gone."""

    def __init__(self, app: WSGIApplication, queue_timeout: float) -> None:
        self.app = app
        self.queue_timeout = queue_timeout

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        waited = queued_seconds(environ, time.time())
        if waited is not None and waited > self.queue_timeout:
            return self.shed(start_response, f"waited {waited:.1f} s in the queue")
        if upstream_closed():
            return self.shed(start_response, "lost its client")
        return self.app(environ, start_response)

    def shed(self, start_response: StartResponse, why: str) -> list[bytes]:
        # uWSGI's log-5xx already logs each one: nothing to add here.
        message = f"the server is overloaded: this request {why}; retry later"
        body = json.dumps({"error": "overloaded", "message": message}).encode() + b"\n"
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Retry-After", RETRY_AFTER),
            ],
        )
        return [body]
