"""Talking to uWSGI's socket directly, over the uwsgi protocol: the start-up wait and the health check."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import time

from app.settings import Settings

START_TIMEOUT = 30.0
HEALTH_REQUEST = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/healthz",
    "REQUEST_URI": "/healthz",
    "QUERY_STRING": "",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.0",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": "localhost",
}


def wait_for_socket(settings: Settings, process: subprocess.Popen[bytes]) -> bool:
    """Wait until uWSGI accepts connections; False if it exited or took too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with connect(settings, timeout=1.0):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def healthcheck(settings: Settings) -> int:
    """GET /healthz over the uwsgi protocol, straight to uWSGI's socket; 0 when it answers 200."""
    body = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
        for k, v in HEALTH_REQUEST.items()
    )
    try:
        with connect(settings, timeout=5.0) as sock:
            sock.sendall(struct.pack("<BHB", 0, len(body), 0) + body)
            answer = sock.recv(64)
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    status_line = answer.split(b"\r\n", 1)[0]
    if b" 200" not in status_line:
        print(f"unhealthy: {status_line.decode(errors='replace')}", file=sys.stderr)
        return 1
    return 0


def connect(settings: Settings, timeout: float) -> socket.socket:
    """A connection to uWSGI's socket (unix or TCP); raises OSError when nothing listens."""
    socket_path = settings.socket_path
    if socket_path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
        except OSError:
            sock.close()
            raise
        return sock
    host, _, port = settings.socket.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return socket.create_connection((host, int(port)), timeout=timeout)
