"""Busy ports, found before anything starts: nginx and uWSGI would only repeat their bind errors."""

from __future__ import annotations

import errno
import socket

from app.settings import Settings, SettingsError


def check_ports_free(settings: Settings, with_nginx: bool) -> None:
    """Raise ``SettingsError`` naming the first setting whose address another program holds."""
    wanted: list[tuple[str, str, int]] = [("STATS_PORT", settings.stats_host, settings.stats_port)]
    if with_nginx:
        wanted.insert(0, ("HTTP_PORT", settings.http_host, settings.http_port))
    if settings.socket_path is None:
        socket_host, _, socket_port = settings.socket.rpartition(":")
        wanted.append(("SOCKET", socket_host or "0.0.0.0", int(socket_port)))
    for name, host, port in wanted:
        if _in_use(host, port):
            raise SettingsError(f"{name}: {host}:{port} is already in use; choose another port")


def _in_use(host: str, port: int) -> bool:
    """True when binding ``host:port`` fails because something listens there."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return False  # an unknown host is the server's to report
    with socket.socket(family, kind, proto) as probe:
        # As nginx and uWSGI bind: a port left with connections in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False
