"""Every setting, read from the environment in one place and validated before anything starts.

A bad value raises ``SettingsError`` whose message is one line naming the variable; the
launcher (``python -m app.serve``) and the WSGI module print that line and exit non-zero.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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


def _node_name(name: str, raw: str) -> str:
    """Empty (the host name) or a name for this node: no ``/``, which separates an owner's parts."""
    value = raw.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
        raise SettingsError(
            f"{name}: expected up to 63 letters, digits, '.', '_' or '-' (empty: the host name), got {raw!r}"
        )
    return value


def _database_url(name: str, raw: str) -> str:
    """Empty (SQLite in DATA_DIR) or a PostgreSQL URL; never echoed back, as it may hold a password."""
    value = raw.strip()
    if value and not re.match(r"postgres(ql)?://", value):
        scheme = value.split("://", 1)[0] if "://" in value else "no scheme"
        raise SettingsError(
            f"{name}: expected a postgresql:// URL (or nothing, for SQLite in DATA_DIR), got {scheme!r}"
        )
    return value


def _password(name: str, raw: str) -> str:
    """Taken as given: a password's spaces are its own (a file's trailing newline is stripped)."""
    return raw


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


def _log_level(name: str, raw: str) -> str:
    """A level's name, in any case, as ``logging`` spells it."""
    return _choice("debug", "info", "warning", "error")(name, raw).upper()


def _modules(name: str, raw: str) -> tuple[str, ...]:
    modules = tuple(part.strip() for part in raw.split(",") if part.strip())
    for module in modules:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module):
            raise SettingsError(f"{name}: {module!r} is not a Python module name")
    return modules


@dataclass(frozen=True)
class Computed:
    """A default worked out on this machine at start-up; ``shown`` is how the README states it."""

    shown: str
    compute: Callable[[], str]


@dataclass(frozen=True)
class Compose:
    """What a variable is under docker-compose.yml.

    ``passed``: Compose hands it to the app's container, where unset or empty means the app's
    default. ``default`` and ``meaning``: Compose reads it itself (a published port, an image).
    ``image``: the Dockerfile fixes it in the app's container (a volume's path, the socket).
    """

    passed: bool = False
    default: str | None = None
    meaning: str | None = None
    image: str | None = None


PASSED = Compose(passed=True)


def fixed_by_image(value: str) -> Compose:
    """A setting the app's image fixes with an ENV line: Compose does not pass it."""
    return Compose(image=value)


@dataclass(frozen=True)
class Setting:
    """How one environment variable is defaulted, documented, parsed and used under Compose."""

    default: str | Computed
    meaning: str
    parse: Callable[[str, str], Any]
    compose: Compose | None

    def raw_default(self) -> str:
        """The default as the environment would give it, worked out on this machine."""
        return self.default.compute() if isinstance(self.default, Computed) else self.default

    def shown_default(self) -> str:
        """The default as the README states it."""
        return self.default.shown if isinstance(self.default, Computed) else self.default


_DECLARATION = "setting"


def declare(
    default: str | Computed,
    meaning: str,
    parse: Callable[[str, str], Any],
    compose: Compose | None = PASSED,
) -> Any:
    """A field of ``Settings`` carrying its declaration; the variable is the field's name in capitals.

    ``compose``: how the variable is used under docker-compose.yml; None: natively only.
    """
    return field(metadata={_DECLARATION: Setting(default, meaning, parse, compose)})


@dataclass(frozen=True)
class Settings:
    """The validated settings of one process, each field declared once, with its documentation.

    The README's tables, docker-compose.yml's header and pass-through list, and the Dockerfile's
    ENV lines are generated from or checked against these declarations (tests/test_settings.py).
    """

    http_host: str = declare(
        "127.0.0.1",
        "Address nginx listens on",
        _host,
        Compose(default="0.0.0.0", meaning="Host address nginx is published on"),
    )
    http_port: int = declare(
        "8080",
        "Port nginx listens on",
        _port,
        Compose(default="8080", meaning="Host port nginx is published on"),
    )
    stats_host: str = declare(
        "127.0.0.1", "Address of the uWSGI stats server", _host, fixed_by_image("0.0.0.0")
    )
    stats_port: int = declare(
        "9191",
        "Port of the uWSGI stats server (JSON)",
        _port,
        Compose(
            default="9191",
            meaning="Host port of the stats server, published on 127.0.0.1 only "
            "(with --scale app=N: a range of N ports, 9191-9193)",
            image="9191",
        ),
    )
    socket: str = declare(
        "",
        "Where uWSGI listens for nginx: a unix socket path or host:port (default: RUN_DIR/uwsgi.sock)",
        _text,
        fixed_by_image("0.0.0.0:3031"),
    )
    processes: int = declare(
        Computed("2 × CPU cores", lambda: str(max(2, 2 * usable_cpus()))),
        "uWSGI worker processes (default: twice the CPU cores this process may use, at least 2)",
        _integer(1, 256),
    )
    threads: int = declare("1", "Request threads per worker process", _integer(1, 64))
    harakiri: int = declare(
        "30",
        "Seconds before a stuck request's worker is killed; nginx waits 5 s longer",
        _integer(2, 3600),
    )
    queue_timeout: int = declare(
        "",
        "Seconds a request may wait for a worker before it is shed with a 503 "
        "(default: HARAKIRI; at most HARAKIRI + 4, below nginx's timeout)",
        _optional(_integer(1, 3604)),
    )
    # Not 5,000 (before): with workers at ~2,400 requests/s each, every worker was recycled as
    # soon as uWSGI allows (min-worker-lifetime, 10 s), and the stack served GET /api/info at
    # ~7,400 requests/s instead of ~9,500 (A/B, 7 rounds); 100,000 measured as recycling off.
    # RELOAD_ON_RSS is the memory guard; this one is for leaks of anything else.
    max_requests: int = declare(
        "100000", "Requests a worker serves before it is recycled", _integer(1, 10_000_000)
    )
    reload_on_rss: int = declare(
        "512", "Resident memory (MB) above which a worker is recycled", _integer(16, 1_000_000)
    )
    listen_backlog: int = declare(
        Computed("min(1024, somaxconn)", lambda: str(min(1024, _somaxconn()))),
        "Listen queue of the uWSGI socket (at most net.core.somaxconn)",
        _backlog,
    )
    max_body_size: str = declare("10m", "Largest request body nginx accepts (413 beyond)", _size)
    data_dir: Path = declare("var/data", "Database and job outputs", _directory, fixed_by_image("/data"))
    spool_dir: Path = declare(
        "var/spool",
        "uWSGI spooler directory: one file per job",
        _directory,
        fixed_by_image("/spool"),
    )
    run_dir: Path = declare(
        "var/run", "Sockets, pid files, the master FIFO", _directory, fixed_by_image("/run/app")
    )
    spooler_processes: int = declare("2", "Spooler processes", _integer(1, 64))
    # 10: while the workers saturate the CPU, the spoolers still get a few percent of it (weight
    # 110 against a worker's 1024), enough for 200 jobs/s with p99 waits of tens of ms; at uWSGI's
    # 19 (weight 15) the backlog grew to a p99 of 7-9 s (bench/results/latest.md).
    spooler_nice: int = declare(
        "10",
        "CPU priority of the spoolers (10: requests first, jobs still progress; 19: uWSGI's own, jobs "
        "wait while requests saturate the CPU; 0: jobs share it). Below 19 needs root, CAP_SYS_NICE or "
        "a nice rlimit of 20 minus it (ulimit -e 10 for 10), else it stays 19 with a log line",
        _integer(0, 19),
    )
    mules: int = declare("1", "Mule processes for in-memory jobs", _integer(0, 64))
    jobs_local_mode: str = declare(
        "threads",
        "Without uWSGI, jobs run in a thread pool (threads) or at once in the caller (inline)",
        _choice("threads", "inline"),
        compose=None,
    )
    jobs_diag: bool = declare("true", "Register the diag.* tasks", _boolean)
    jobs_retention_days: int = declare(
        "7", "Finished job records older than this are purged", _integer(1, 3650)
    )
    jobs_import: tuple[str, ...] = declare(
        "",
        "Comma-separated modules to import at start-up: where your own tasks are declared",
        _modules,
    )
    log_level: str = declare(
        "INFO",
        "Lowest level of the app's log lines: INFO has each job's queued, retry and succeeded lines "
        "(their cost: README, Logs), WARNING only failures and problems; uWSGI's and nginx's stay",
        _log_level,
    )
    node_name: str = declare(
        "",
        "This node's name in the job store, unique among the stacks sharing it (default: the name kept in "
        "SPOOL_DIR/.node, the host name of its first start)",
        _node_name,
    )
    node_timeout: int = declare(
        "30",
        "Seconds without a heartbeat after which a node is dead and live nodes adopt its jobs "
        "(each node beats every sixth of this)",
        _integer(3, 3600),
    )
    operator_token: str = declare(
        "",
        "Bearer token for the jobs API; empty: only loopback clients may use it (or OPERATOR_TOKEN_FILE)",
        _text,
    )
    database_url: str = declare(
        "",
        "The job store on PostgreSQL: postgresql://user@host:port/db; empty: SQLite in DATA_DIR"
        " (or DATABASE_URL_FILE)",
        _database_url,
    )
    database_password: str = declare(
        "",
        "PostgreSQL's password, replacing the one in DATABASE_URL (or DATABASE_PASSWORD_FILE)",
        _password,
    )
    database_wait: int = declare(
        "60",
        "Seconds the launcher waits for an unreachable PostgreSQL at start (services start in any "
        "order under an orchestrator); a rejected login stops it at once",
        _integer(0, 3600),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting; raises ``SettingsError`` on the first bad one."""
        env = os.environ if environ is None else environ
        values = {}
        for name, setting in SETTINGS.items():
            raw = _secret_from_file(env, name) if name in SECRETS else env.get(name)
            if raw is None or raw.strip() == "":
                raw = setting.raw_default()
            values[name.lower()] = setting.parse(name, raw)
        if not values["socket"]:
            values["socket"] = str(values["run_dir"] / "uwsgi.sock")
        if values["queue_timeout"] is None:
            values["queue_timeout"] = values["harakiri"]
        settings = cls(**values)
        if settings.queue_timeout >= settings.upstream_timeout:
            raise SettingsError(
                f"QUEUE_TIMEOUT: expected at most HARAKIRI + 4 = {settings.upstream_timeout - 1} "
                f"(nginx gives up after HARAKIRI + 5), got {settings.queue_timeout}"
            )
        return settings

    @property
    def upstream_timeout(self) -> int:
        """Seconds nginx waits for uWSGI: 5 s beyond HARAKIRI, so that uWSGI ends a stuck request first."""
        return self.harakiri + 5

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between a node's heartbeats: six go by before NODE_TIMEOUT declares it dead."""
        return self.node_timeout / 6

    @property
    def socket_path(self) -> Path | None:
        """The unix socket's absolute path, or None when uWSGI listens on TCP."""
        if re.fullmatch(r"[^/]*:[0-9]+", self.socket):
            return None
        path = Path(self.socket)
        return path if path.is_absolute() else PROJECT_ROOT / path

    @property
    def database_location(self) -> str:
        """Where the job store is, for messages: a path, or PostgreSQL's host:port/db (no password)."""
        if self.database_url:
            from app.db import describe_url

            return f"PostgreSQL at {describe_url(self.database_url)}"
        return str(self.database_path)

    def shown_env(self) -> dict[str, str]:
        """``as_env()`` fit to print: the secrets masked, and the password in DATABASE_URL too."""
        env = self.as_env()
        for name in SECRETS:
            if name == "DATABASE_URL":
                env[name] = mask_url(env[name])
            elif env[name]:
                env[name] = "***"
        return env

    @property
    def database_path(self) -> Path:
        return self.data_dir / "app.sqlite3"

    @property
    def media_dir(self) -> Path:
        """Job outputs that nginx serves under /media/."""
        return self.data_dir / "media"

    @property
    def thumbs_dir(self) -> Path:
        """The thumbnail example's outputs, served under /media/thumbs/."""
        return self.media_dir / "thumbs"

    @property
    def uploads_dir(self) -> Path:
        """The thumbnail example's uploads: private, never served."""
        return self.data_dir / "uploads"

    def purge_cutoff(self, now: float, older_than_days: float | None = None) -> float:
        """The time before which finished job records are purged (default: JOBS_RETENTION_DAYS)."""
        days = self.jobs_retention_days if older_than_days is None else older_than_days
        return now - days * 86400

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, normalised, for uwsgi.ini's $(NAME) lookups."""
        env = {}
        for name in SETTINGS:
            value = getattr(self, name.lower())
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, tuple):
                value = ",".join(value)
            env[name] = str(value)
        socket_path = self.socket_path
        env["SOCKET"] = str(socket_path) if socket_path else self.socket
        return env


def _secret_from_file(env: Mapping[str, str], name: str) -> str | None:
    """A secret's value from NAME, or read from the file NAME_FILE names (Docker secrets'
    convention: /run/secrets/x), its trailing newline stripped; both set is an error."""
    raw = env.get(name)
    path = env.get(f"{name}_FILE", "").strip()
    if not path:
        return raw
    if raw is not None and raw.strip():
        raise SettingsError(f"{name} and {name}_FILE are both set: keep one")
    try:
        return Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"{name}_FILE: cannot read {path!r}: {reason}") from None


def mask_url(url: str) -> str:
    """``url`` with the password of its user part (user:password@) replaced by ***."""
    return re.sub(r"^([a-z]+://[^/@:]*:)[^/@]*@", r"\1***@", url)


# The settings that may be read from a file (NAME_FILE) and are never printed.
SECRETS = frozenset({"OPERATOR_TOKEN", "DATABASE_URL", "DATABASE_PASSWORD"})

# Every setting by its variable, in the order of the fields (and of the README's tables).
SETTINGS: dict[str, Setting] = {f.name.upper(): f.metadata[_DECLARATION] for f in fields(Settings)}

# Variables only docker-compose.yml reads: the stack's own, not the app's.
COMPOSE_ONLY: dict[str, Compose] = {
    "HEALTHCHECK_INTERVAL": Compose(default="10s", meaning="How often each service's health is checked"),
    "PYTHON_IMAGE": Compose(default="python:3.11-slim-bookworm", meaning="Base of the app image"),
    "NGINX_IMAGE": Compose(default="nginx:1.26-bookworm", meaning="The nginx image"),
    "PIP_NO_INDEX": Compose(default="", meaning="1: build only from docker/wheelhouse/, offline"),
    "APP_IMAGE": Compose(default="flask-uwsgi-stack-app", meaning="Tag of the built app image"),
    "PROMETHEUS_IMAGE": Compose(
        default="prom/prometheus:v2.42.0", meaning="The Prometheus image (the `monitoring` profile)"
    ),
    "PROMETHEUS_PORT": Compose(
        default="9090", meaning="Prometheus's UI and API, published on 127.0.0.1 (the `monitoring` profile)"
    ),
    "PROMETHEUS_RETENTION": Compose(
        default="15d", meaning="How long Prometheus keeps its samples (the `monitoring` profile)"
    ),
    "APP_RESOLVER": Compose(
        default="",
        meaning="DNS server through which nginx re-resolves the app every second, to follow replicas "
        "(127.0.0.11: Docker's); empty: resolved once at start",
    ),
    "REPLICAS": Compose(default="3", meaning="App replicas under Docker Swarm (`make swarm-up`)"),
    "STACK_NAME": Compose(
        default="flask-uwsgi-stack", meaning="The Swarm stack's name, prefix of its secrets (`make swarm-up`)"
    ),
    "POSTGRES_IMAGE": Compose(
        default="postgres:15-bookworm", meaning="The PostgreSQL image (the `postgres` profile, Swarm)"
    ),
}
