"""Every setting, read from the environment in one place and validated before anything starts.

A bad value raises ``SettingsError`` whose message is one line naming the variable; the
launcher (``python -m app.serve``) and the WSGI module print that line and exit non-zero.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: what a container's cpuset allows)."""
    return len(os.sched_getaffinity(0))


def _somaxconn() -> int:
    """The kernel's cap on a listen backlog (``net.core.somaxconn``), 128 if unreadable."""
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text().strip())
    except (OSError, ValueError):
        return 128


@dataclass(frozen=True)
class Setting:
    """How one environment variable is documented, defaulted and parsed."""

    name: str
    default: Callable[[], str]
    meaning: str
    parse: Callable[[str, str], Any]


def _integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise SettingsError(
                f"{name}: expected a whole number from {low} to {high}, got {raw!r}"
            ) from None
        if not low <= value <= high:
            raise SettingsError(f"{name}: expected a whole number from {low} to {high}, got {value}")
        return value

    return parse


def _optional(parse: Callable[[str, str], int]) -> Callable[[str, str], int | None]:
    """An empty value stands for a default derived from other settings."""
    return lambda name, raw: parse(name, raw) if raw.strip() else None


def _port(name: str, raw: str) -> int:
    return _integer(1, 65535)(name, raw)


def _directory(name: str, raw: str) -> Path:
    """An absolute directory, created private (0700) if missing; it must end up writable."""
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"{name}: cannot create directory {str(path)!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"{name}: directory {str(path)!r} is not writable")
    return path


def _host(name: str, raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[0-9A-Za-z.:\-\[\]]+", value):
        raise SettingsError(f"{name}: expected an IP address or host name, got {raw!r}")
    return value


def _size(name: str, raw: str) -> str:
    """An nginx size such as 10m, 512k or 1048576."""
    value = raw.strip().lower()
    if not re.fullmatch(r"[1-9][0-9]*[km]?", value):
        raise SettingsError(f"{name}: expected a size such as 10m, 512k or 1048576, got {raw!r}")
    return value


def _backlog(name: str, raw: str) -> int:
    cap = _somaxconn()
    return _integer(16, cap)(name, raw)


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name}: expected true or false, got {raw!r}")


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise SettingsError(f"{name}: expected one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _modules(name: str, raw: str) -> tuple[str, ...]:
    modules = tuple(part.strip() for part in raw.split(",") if part.strip())
    for module in modules:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
            raise SettingsError(f"{name}: {module!r} is not a Python module name")
    return modules


def _const(value: object) -> Callable[[], str]:
    return lambda: str(value)


# The table of settings: README's settings table is generated from it (python -m app.serve settings).
SETTINGS: tuple[Setting, ...] = (
    Setting("HTTP_HOST", _const("127.0.0.1"), "Address nginx listens on", _host),
    Setting("HTTP_PORT", _const(8080), "Port nginx listens on", _port),
    Setting("STATS_HOST", _const("127.0.0.1"), "Address of the uWSGI stats server", _host),
    Setting("STATS_PORT", _const(9191), "Port of the uWSGI stats server (JSON)", _port),
    Setting(
        "SOCKET",
        _const(""),
        "Where uWSGI listens for nginx: a unix socket path or host:port (default: RUN_DIR/uwsgi.sock)",
        _text,
    ),
    Setting(
        "PROCESSES",
        lambda: str(max(2, 2 * usable_cpus())),
        "uWSGI worker processes (default: twice the CPU cores this process may use, at least 2)",
        _integer(1, 256),
    ),
    Setting("THREADS", _const(1), "Request threads per worker process", _integer(1, 64)),
    Setting(
        "HARAKIRI",
        _const(30),
        "Seconds before a stuck request's worker is killed; nginx waits 5 s longer",
        _integer(2, 3600),
    ),
    Setting(
        "QUEUE_TIMEOUT",
        _const(""),
        "Seconds a request may wait for a worker before it is shed with a 503 "
        "(default: HARAKIRI; at most HARAKIRI + 4, below nginx's timeout)",
        _optional(_integer(1, 3604)),
    ),
    Setting(
        "MAX_REQUESTS",
        _const(5000),
        "Requests a worker serves before it is recycled",
        _integer(1, 10_000_000),
    ),
    Setting(
        "RELOAD_ON_RSS",
        _const(512),
        "Resident memory (MB) above which a worker is recycled",
        _integer(16, 1_000_000),
    ),
    Setting(
        "LISTEN_BACKLOG",
        lambda: str(min(1024, _somaxconn())),
        "Listen queue of the uWSGI socket (at most net.core.somaxconn)",
        _backlog,
    ),
    Setting("MAX_BODY_SIZE", _const("10m"), "Largest request body nginx accepts (413 beyond)", _size),
    Setting("DATA_DIR", _const("var/data"), "Database and job outputs", _directory),
    Setting("SPOOL_DIR", _const("var/spool"), "uWSGI spooler directory: one file per job", _directory),
    Setting("RUN_DIR", _const("var/run"), "Sockets, pid files, the master FIFO", _directory),
    Setting("SPOOLER_PROCESSES", _const(2), "Spooler processes", _integer(1, 64)),
    Setting("MULES", _const(1), "Mule processes for in-memory jobs", _integer(0, 64)),
    Setting(
        "JOBS_LOCAL_MODE",
        _const("threads"),
        "Without uWSGI, jobs run in a thread pool (threads) or at once in the caller (inline)",
        _choice("threads", "inline"),
    ),
    Setting("JOBS_DIAG", _const("true"), "Register the diag.* tasks", _boolean),
    Setting(
        "JOBS_RETENTION_DAYS",
        _const(7),
        "Finished job records older than this are purged",
        _integer(1, 3650),
    ),
    Setting(
        "JOBS_IMPORT",
        _const(""),
        "Comma-separated modules to import at start-up: where your own tasks are declared",
        _modules,
    ),
    Setting(
        "OPERATOR_TOKEN",
        _const(""),
        "Bearer token for the jobs API; empty: only loopback clients may use it",
        _text,
    ),
)


@dataclass(frozen=True)
class Settings:
    """The validated settings of one process."""

    http_host: str
    http_port: int
    stats_host: str
    stats_port: int
    socket: str
    processes: int
    threads: int
    harakiri: int
    queue_timeout: int
    max_requests: int
    reload_on_rss: int
    listen_backlog: int
    max_body_size: str
    data_dir: Path
    spool_dir: Path
    run_dir: Path
    spooler_processes: int
    mules: int
    jobs_local_mode: str
    jobs_diag: bool
    jobs_retention_days: int
    jobs_import: tuple[str, ...]
    operator_token: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raises ``SettingsError`` on the first bad one."""
        env = os.environ if environ is None else environ
        values = {}
        for setting in SETTINGS:
            raw = env.get(setting.name)
            if raw is None or raw.strip() == "":
                raw = setting.default()
            values[setting.name.lower()] = setting.parse(setting.name, raw)
        if not values["socket"]:
            values["socket"] = str(values["run_dir"] / "uwsgi.sock")
        if values["queue_timeout"] is None:
            values["queue_timeout"] = values["harakiri"]
        if values["queue_timeout"] > values["harakiri"] + 4:
            raise SettingsError(
                f"QUEUE_TIMEOUT: expected at most HARAKIRI + 4 = {values['harakiri'] + 4} "
                f"(nginx gives up after HARAKIRI + 5), got {values['queue_timeout']}"
            )
        return cls(**values)

    @property
    def socket_path(self) -> Path | None:
        """The unix socket's absolute path, or None when uWSGI listens on TCP."""
        if re.fullmatch(r"[^/]*:[0-9]+", self.socket):
            return None
        path = Path(self.socket)
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def database_path(self) -> Path:
        return self.data_dir / "app.sqlite3"

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, normalised, for uwsgi.ini's $(NAME) lookups."""
        env = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, tuple):
                value = ",".join(value)
            env[field.name.upper()] = str(value)
        socket_path = self.socket_path
        env["SOCKET"] = str(socket_path) if socket_path else self.socket
        return env
