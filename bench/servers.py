"""The HTTP servers compared: this stack, bare uWSGI, gunicorn, and the plain nginx in front."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.procs import BENCH_BIN, PROJECT_PYTHON, ROOT, Server, free_port, scratch_dir, wait_until

# nginx's own list (the project's adds a variable its configuration defines).
UWSGI_PARAMS = Path("/etc/nginx/uwsgi_params")
TOKEN = "bench-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
START_TIMEOUT = 60.0


def app_env(state: Path, **settings: object) -> dict[str, str]:
    """The app's settings for a run under ``state``: its own database, spool and run dirs."""
    env = {
        "DATA_DIR": str(state / "data"),
        "SPOOL_DIR": str(state / "spool"),
        "RUN_DIR": str(state / "run"),
        "OPERATOR_TOKEN": TOKEN,
        "JOBS_DIAG": "true",
        "PYTHONPATH": str(ROOT),
    }
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def stats(port: int) -> dict[str, Any]:
    """The uWSGI stats server's JSON."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    document: dict[str, Any] = json.loads(b"".join(chunks))
    return document


class Stack:
    """``python -m app.serve``: the launcher, uwsgi.ini and the project's nginx configuration.
    With ``command="uwsgi"`` only its uWSGI (production settings) runs, on ``socket``."""

    def __init__(self, name: str, command: str = "run", **settings: object) -> None:
        self.state = scratch_dir(name)
        self.http_port = free_port()
        self.stats_port = free_port()
        self.socket = self.state / "app.sock"
        env = app_env(
            self.state,
            http_port=self.http_port,
            stats_port=self.stats_port,
            socket=self.socket,
            **settings,
        )
        argv = [str(PROJECT_PYTHON), "-m", "app.serve", command]
        self.server = Server(name, argv, self.state / "server.log", env)
        self.command = " ".join(f"{k}={v}" for k, v in settings.items()) + " " + " ".join(argv[1:])

    def start(self) -> Server:
        self.server.start()
        if self.server.command[-1] == "run":
            self._wait(lambda: answers(f"http://127.0.0.1:{self.http_port}/healthz"))
        else:
            self._wait(self.socket.exists)
        self._wait(self.idle)
        return self.server

    def _wait(self, check: Callable[[], bool]) -> None:
        def ready() -> bool:
            self.server.check_alive()
            return check()

        wait_until(ready, START_TIMEOUT, f"{self.server.name} to start (log: {self.server.log})")

    def idle(self) -> bool:
        """Every worker idle and nothing in the listen queue (the stats server says so)."""
        try:
            document = stats(self.stats_port)
        except OSError:
            return False
        workers = document.get("workers", [])
        busy = [w for w in workers if w.get("status") != "idle"]
        return not busy and not document.get("listen_queue")

    def pids(self) -> dict[str, list[int]]:
        """The worker, spooler and mule pids, by role (stats for workers and spoolers)."""
        document = stats(self.stats_port)
        roles: dict[str, list[int]] = {
            "master": [int(document["pid"])],
            "worker": [int(w["pid"]) for w in document["workers"]],
            "spooler": [int(s["pid"]) for s in document.get("spoolers", [])],
            "mule": [],
        }
        known = {pid for pids in roles.values() for pid in pids}
        # The stats have no mules: they are the master's other children (pyuwsgi keeps one
        # command line for every process).
        roles["mule"] = [child for child in children(roles["master"][0]) if child not in known]
        return roles


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


# The WSGI callable every server runs; bench.minimal_app's is Flask with nothing of the app.
APP_MODULE = "app.wsgi:app"
MINIMAL_MODULE = "bench.minimal_app:app"


def bare_uwsgi(
    name: str, state: Path, socket_path: Path, processes: int, threads: int, module: str = APP_MODULE
) -> Server:
    """uWSGI with a minimal configuration: master, processes, threads, the app; nothing else."""
    argv = [
        str(PROJECT_PYTHON.parent / "uwsgi"),
        "--master",
        "--die-on-term",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--socket",
        str(socket_path),
        "--module",
        module,
        "--disable-logging",
    ]
    return Server(name, argv, state / "server.log", app_env(state, processes=processes, threads=threads))


def gunicorn(
    name: str,
    state: Path,
    socket_path: Path,
    processes: int,
    threads: int,
    worker_class: str,
    module: str = APP_MODULE,
) -> Server:
    """gunicorn serving the same Flask app (``sync`` or ``gthread``), preloaded like uWSGI's."""
    argv = [
        str(BENCH_BIN / "gunicorn"),
        "--workers",
        str(processes),
        "--worker-class",
        worker_class,
        "--bind",
        f"unix:{socket_path}",
        "--preload",
        module,
    ]
    if worker_class == "gthread":
        argv[5:5] = ["--threads", str(threads)]
    env = app_env(state, processes=processes, threads=threads)
    return Server(name, argv, state / "server.log", env)


def plain_nginx(state: Path, socket_path: Path, protocol: str) -> tuple[Server, int]:
    """nginx with the smallest configuration that proxies to ``socket_path`` (``uwsgi`` or
    ``http``): the same for every server compared; no access log, no retries, no extras."""
    port = free_port()
    conf_dir = state / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (conf_dir / sub).mkdir(parents=True, exist_ok=True)
    if protocol == "uwsgi":
        upstream = f"include {UWSGI_PARAMS}; uwsgi_pass unix:{socket_path};"
    else:
        upstream = f"proxy_set_header Host $host; proxy_pass http://unix:{socket_path};"
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        PLAIN_NGINX.format(run=conf_dir, user=user, port=port, upstream=upstream, temp=conf_dir)
        .replace("[[", "{")
        .replace("]]", "}")
    )
    argv = ["nginx", "-e", "stderr", "-c", str(conf)]
    return Server("nginx", argv, state / "nginx.log", stop_signal=signal.SIGQUIT), port


PLAIN_NGINX = """daemon off;
worker_processes auto;
pid {run}/nginx.pid;
error_log stderr warn;
{user}
events [[ worker_connections 1024; ]]
http [[
  access_log off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  server [[
    listen 127.0.0.1:{port};
    location / [[ {upstream} ]]
  ]]
]]
"""
