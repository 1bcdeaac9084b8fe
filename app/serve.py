"""Start the stack: ``python -m app.serve [run|uwsgi|check|nginx-conf|healthcheck|reload|settings]``.

``run`` (the default, what ``make run`` calls) starts uWSGI and nginx in the foreground and
stops both, gracefully, on Ctrl-C or SIGTERM. ``uwsgi`` replaces itself with the uWSGI master
(the container's command). Every command validates the settings first and stops with one line
naming the variable when one is bad.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

from app.settings import PROJECT_ROOT, SETTINGS, Settings, SettingsError

STOP_TIMEOUT = 10.0
START_TIMEOUT = 30.0
NGINX_INSTALL_HINT = (
    "nginx is not installed: install it (Debian/Ubuntu: sudo apt-get install nginx-light; "
    "macOS: brew install nginx) or set NGINX to its path"
)


def uwsgi_command() -> list[str]:
    binary = Path(sys.executable).parent / "uwsgi"
    return [str(binary if binary.exists() else "uwsgi"), "--ini", str(PROJECT_ROOT / "uwsgi.ini")]


def uwsgi_env(settings: Settings) -> dict[str, str]:
    """The environment uwsgi.ini reads; options uWSGI parses before expanding $(NAME)
    ("immediate" ones) are passed as UWSGI_<OPTION> variables instead."""
    return {
        **os.environ,
        **settings.as_env(),
        "UWSGI_LISTEN": str(settings.listen_backlog),
        "UWSGI_SPOOLER_PROCESSES": str(settings.spooler_processes),
        "PYTHON_BINARY": sys.executable,
    }


def render_nginx(settings: Settings, nginx: str) -> Path:
    """Write the native nginx configuration under RUN_DIR/nginx; returns the main file."""
    conf_dir = settings.run_dir / "nginx"
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (conf_dir / sub).mkdir(parents=True, exist_ok=True)
    socket_path = settings.socket_path
    values = {
        "APP_UPSTREAM": f"unix:{socket_path}" if socket_path else settings.socket,
        "NGINX_LISTEN": f"{settings.http_host}:{settings.http_port}",
        "MAX_BODY_SIZE": settings.max_body_size,
        "NGINX_DIR": str(PROJECT_ROOT / "nginx"),
        "STATIC_ROOT": str(PROJECT_ROOT / "app" / "static"),
        "MEDIA_ROOT": str(settings.data_dir / "media"),
        "UPSTREAM_TIMEOUT": str(settings.harakiri + 5),
        "RUN_DIR": str(settings.run_dir),
        "MIME_TYPES": str(_mime_types(nginx)),
        # Workers run as the user that owns the uWSGI socket (only root needs saying so).
        "NGINX_USER": "user root root;" if os.geteuid() == 0 else "",
    }
    templates = PROJECT_ROOT / "nginx"
    (conf_dir / "app.conf").write_text(fill((templates / "templates" / "app.conf.template"), values))
    (conf_dir / "nginx.conf").write_text(fill(templates / "native.conf.template", values))
    return conf_dir / "nginx.conf"


def fill(template: Path, values: dict[str, str]) -> str:
    """Replace each ${UPPER_CASE} placeholder, as envsubst does; nginx's $variables stay."""
    return re.sub(r"\$\{([A-Z][A-Z0-9_]*)\}", lambda m: values[m.group(1)], template.read_text())


def _mime_types(nginx: str) -> Path:
    """nginx's own mime.types, next to its compiled-in configuration path."""
    try:
        version = subprocess.run([nginx, "-V"], capture_output=True, text=True, check=False).stderr
    except OSError:
        version = ""
    for word in version.split():
        if word.startswith("--conf-path="):
            candidate = Path(word.split("=", 1)[1]).parent / "mime.types"
            if candidate.exists():
                return candidate
    return Path("/etc/nginx/mime.types")


def find_nginx() -> str | None:
    configured = os.environ.get("NGINX")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def wait_for_socket(settings: Settings, process: subprocess.Popen[bytes]) -> bool:
    """Wait until uWSGI accepts connections; False if it exited or took too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with _connect(settings, timeout=1.0):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _connect(settings: Settings, timeout: float) -> socket.socket:
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


def run(settings: Settings) -> int:
    """uWSGI and nginx in the foreground; stop both on SIGINT/SIGTERM or when one exits."""
    nginx = find_nginx()
    if nginx is None:
        print(NGINX_INSTALL_HINT, file=sys.stderr)
        return 3
    conf = render_nginx(settings, nginx)
    test = subprocess.run([nginx, "-t", "-q", "-e", "stderr", "-c", str(conf)], check=False)
    if test.returncode != 0:
        print(f"nginx rejected {conf}", file=sys.stderr)
        return 3

    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    # Own sessions: Ctrl-C reaches only this launcher, which stops both gracefully.
    uwsgi = subprocess.Popen(uwsgi_command(), env=uwsgi_env(settings), start_new_session=True)
    children: list[tuple[subprocess.Popen[bytes], int]] = [(uwsgi, signal.SIGTERM)]
    if wait_for_socket(settings, uwsgi):
        nginx_proc = subprocess.Popen([nginx, "-e", "stderr", "-c", str(conf)], start_new_session=True)
        children.append((nginx_proc, signal.SIGQUIT))  # SIGQUIT: nginx's graceful stop
        print(
            f"serving on http://{settings.http_host}:{settings.http_port}/ "
            f"(stats: {settings.stats_host}:{settings.stats_port}); Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
    else:
        stopping = True

    while not stopping and all(proc.poll() is None for proc, _ in children):
        time.sleep(0.2)
    return stop(children)


def stop(children: list[tuple[subprocess.Popen[bytes], int]]) -> int:
    """Ask each child to stop gracefully, then kill what is left after STOP_TIMEOUT."""
    for proc, signum in children:
        if proc.poll() is None:
            proc.send_signal(signum)
    deadline = time.monotonic() + STOP_TIMEOUT - 0.5
    for proc, _ in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for proc, _ in children:
        # Spoolers and mules left by a killed master share its session: end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    failures = [proc.returncode for proc, _ in children if proc.returncode and proc.returncode > 0]
    return max(failures, default=0)


def healthcheck(settings: Settings) -> int:
    """GET /healthz over the uwsgi protocol, straight to uWSGI's socket; 0 when it answers 200."""
    variables = {
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
    body = b"".join(
        struct.pack("<H", len(k)) + k.encode() + struct.pack("<H", len(v)) + v.encode()
        for k, v in variables.items()
    )
    try:
        with _connect(settings, timeout=5.0) as sock:
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


def reload(settings: Settings) -> int:
    """Graceful reload of every worker through the master FIFO."""
    fifo = settings.run_dir / "uwsgi.fifo"
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        print(f"no uWSGI master listens on {fifo}: {exc.strerror}", file=sys.stderr)
        return 1
    with os.fdopen(fd, "w") as pipe:
        pipe.write("r")
    return 0


def settings_table() -> str:
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        default = setting.default()
        if setting.name == "PROCESSES":
            default = "2 × CPU cores"
        elif setting.name == "LISTEN_BACKLOG":
            default = "min(1024, somaxconn)"
        shown = f"`{default}`" if default else "(none)"
        lines.append(f"| `{setting.name}` | {shown} | {setting.meaning} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "run"
    if command == "settings":
        print(settings_table())
        return 0
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if command == "run":
        return run(settings)
    if command == "uwsgi":
        command_line = uwsgi_command()
        executable = shutil.which(command_line[0]) or command_line[0]
        os.execve(executable, command_line, uwsgi_env(settings))
    if command == "check":
        for key, value in settings.as_env().items():
            print(f"{key}={'***' if key == 'OPERATOR_TOKEN' and value else value}")
        return 0
    if command == "nginx-conf":
        print(render_nginx(settings, find_nginx() or "nginx"))
        return 0
    if command == "healthcheck":
        return healthcheck(settings)
    if command == "reload":
        return reload(settings)
    print(
        f"unknown command {command!r}: run, uwsgi, check, nginx-conf, healthcheck, reload, settings",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
