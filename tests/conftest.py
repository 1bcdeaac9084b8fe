"""Fixtures: the Flask app and test client, and the real stack (uWSGI + nginx) on free ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.jobs import Jobs, current_jobs
from app.jobs.backends import Backend
from app.jobs.backends.mule import MuleBackend
from app.jobs.backends.spooler import SpoolerBackend
from app.jobs.backends.thread import ThreadBackend
from app.jobs.store import Job
from app.settings import PROJECT_ROOT, Settings
from tests.postgres import PostgresServer, find_bindir

IN_CI = os.environ.get("CI") == "true"
TOKEN = "test-operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# ``make_job(task=..., **fields)`` and ``app_factory(**env)``, as test parameters are annotated.
MakeJob = Callable[..., Job]
AppFactory = Callable[..., Flask]
# The fixtures that start uWSGI, nginx or Docker, and the markers that must then be on the test.
SERVER_FIXTURES = frozenset({"nginx_present", "make_stack", "stack", "docker_stack"})
SERVER_MARKERS = frozenset({"integration", "docker", "faults"})
# What the fault suite measured (requests, failures, seconds to recover), printed after the run.
FIGURES: list[str] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a measured figure under the test's name; the run's summary lists them all."""

    def record(text: str) -> None:
        FIGURES.append(f"{request.node.name}: {text}")

    return record


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Put the Docker engine's images back as the session found them (tests.docker_stack)."""
    docker_stack = sys.modules.get("tests.docker_stack")
    if docker_stack is not None and docker_stack.FOUND:
        docker_stack.FOUND[0].restore()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("measured by the fault suite")
        for line in FIGURES:
            terminalreporter.write_line(line)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail a test that starts a server without a marker saying so, before it starts one:
    ``make unit`` deselects those markers and must never start uWSGI, nginx or Docker."""
    servers = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    markers = {mark.name for mark in item.iter_markers()}
    if servers and not markers & SERVER_MARKERS:
        pytest.fail(
            f"{item.nodeid} uses {', '.join(sorted(servers))}, which start servers,"
            f" but has none of the markers {', '.join(sorted(SERVER_MARKERS))}",
            pytrace=False,
        )


def require(component: str, present: bool) -> None:
    """Skip without ``component``, except in CI, where its absence fails the run."""
    if present:
        return
    if IN_CI:
        pytest.fail(f"{component} is missing, and CI=true requires it")
    pytest.skip(f"{component} is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# The job store's databases a ``both_databases`` test runs on (its ``database`` fixture's values).
DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test marked ``both_databases`` that builds an app once per job-store database."""
    marked = metafunc.definition.get_closest_marker("both_databases")
    if (
        marked
        and "database" in metafunc.fixturenames
        and not metafunc.definition.get_closest_marker("sqlite_only")
    ):
        metafunc.parametrize("database", DATABASES, indirect=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the session's own (Debian's package), removed at the end."""
    bindir = find_bindir()
    require("PostgreSQL (Debian's postgresql package)", bindir is not None)
    assert bindir is not None
    server = PostgresServer(bindir, free_port())
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database, dropped after the test."""
    name = postgres.new_database()
    yield postgres.url(name)
    postgres.drop_database(name)


@pytest.fixture
def database(request: pytest.FixtureRequest) -> Iterator[str]:
    """DATABASE_URL for the test's app: empty (SQLite in DATA_DIR) unless a ``both_databases``
    test runs on PostgreSQL, where it is a fresh schema's (tables of its own, as fresh as a
    database of its own and 50 times quicker to make)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield ""
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    url = server.new_schema()
    yield url
    server.drop_schema(url)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fus-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def app_factory(state_dir: Path, database: str) -> AppFactory:
    """Build apps from settings given as environment variables, over the test's state directory
    and the test's job-store ``database``; jobs run inline, in the caller, unless
    ``JOBS_LOCAL_MODE`` says otherwise."""

    def build(**env: str) -> Flask:
        settings = Settings.from_env(
            {
                "DATA_DIR": str(state_dir / "data"),
                "SPOOL_DIR": str(state_dir / "spool"),
                "RUN_DIR": str(state_dir / "run"),
                "JOBS_LOCAL_MODE": "inline",
                "DATABASE_URL": database,
                **env,
            }
        )
        return create_app(settings, {"TESTING": True})

    return build


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def jobs(app: Flask) -> Jobs:
    """The app's job layer."""
    with app.app_context():
        return current_jobs()


def use_real_backends(jobs: Jobs, uwsgi: Any, spool_dir: Path) -> Jobs:
    """Give ``jobs`` the real backends' judgement (lost, cancel, adoption), with a spooler that
    hands files to ``uwsgi`` (a stand-in, or None) in ``spool_dir``: the test app runs jobs inline."""
    spooler = SpoolerBackend(uwsgi, spool_dir, jobs.store)
    backends: dict[str, Backend] = {
        "spooler": spooler,
        "thread": ThreadBackend(jobs.runner, later=spooler),
        "mule": MuleBackend(None, spooler),  # type: ignore[arg-type]
    }
    jobs.backends = backends
    jobs.spooler = spooler
    return jobs


@pytest.fixture
def make_job(jobs: Jobs) -> MakeJob:
    """Record a job straight in the store, handed to no backend, as a crash or a backend left it:
    ``make_job(task=..., backend=..., handle=..., run_at=...)``; a queued ``diag.noop`` by default."""

    def make(task: str = "diag.noop", **fields: Any) -> Job:
        options = {
            "args_json": "{}",
            "backend": "spooler",
            "max_attempts": 1,
            "timeout": None,
            "run_at": None,
            "request_id": None,
            **fields,
        }
        job = jobs.store.create(task=task, **options)
        assert job is not None, f"a job with unique key {fields.get('unique_key')!r} exists already"
        return job

    return make


class HttpStack:
    """A running stack seen from outside: nginx on ``http_port``, stats on ``stats_port``."""

    def __init__(self) -> None:
        self.http_port = free_port()
        self.stats_port = free_port()
        self.session = requests.Session()
        self.session.headers.update(AUTH)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url(path), timeout=kwargs.pop("timeout", 30), **kwargs)

    def stats(self, host: str = "127.0.0.1") -> dict[str, Any]:
        """The uWSGI stats server's JSON document."""
        with socket.create_connection((host, self.stats_port), timeout=5) as sock:
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        stats: dict[str, Any] = json.loads(b"".join(chunks))
        return stats


class Stack(HttpStack):
    """uWSGI and nginx started by ``python -m app.serve``, as ``make run`` does."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        super().__init__()
        self.root = root
        self.env = {
            **os.environ,
            "HTTP_PORT": str(self.http_port),
            "STATS_PORT": str(self.stats_port),
            "DATA_DIR": str(root / "data"),
            "SPOOL_DIR": str(root / "spool"),
            "RUN_DIR": str(root / "run"),
            "OPERATOR_TOKEN": TOKEN,
            "PROCESSES": "4",
            "PYTHONPATH": str(Path(__file__).parent / "jobs_fixture"),
            "JOBS_IMPORT": "fixture_tasks",
            # The tests read the app's INFO lines, whatever the shell running them has set.
            "LOG_LEVEL": "INFO",
            **env,
        }
        self.log_path = root / "stack.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Stack:
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.serve"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._answers, timeout=30, what=f"the stack to answer (log: {self.log_path})")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the stack exited with {self.process.returncode}:\n{self.logs()}")
        try:
            return requests.get(self.url("/healthz"), timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def enqueue(self, task: str, args: Any = None, **fields: Any) -> dict[str, Any]:
        response = self.post("/api/jobs", json={"task": task, "args": args or {}, **fields})
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"/api/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_for_job(self, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def reached() -> bool:
            found.update(self.job(job_id))
            return found["status"] in statuses

        wait_until(reached, timeout=timeout, what=f"job {job_id} to reach {statuses} (last: {found})")
        return found

    def reload(self) -> None:
        """A graceful reload through the master FIFO, as an operator runs it."""
        command = [sys.executable, "-m", "app.serve", "reload"]
        subprocess.run(command, cwd=PROJECT_ROOT, env=self.env, timeout=10, check=True)

    def master_pid(self) -> int:
        return int((self.root / "run" / "uwsgi.pid").read_text())

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def query_plan(jobs: Jobs, call: Callable[[], object]) -> str:
    """SQLite's query plan (EXPLAIN QUERY PLAN) of every statement that ``call`` reads through the
    job store, joined: the plan of the store's own SQL, not of a copy written for the test."""
    read = jobs.db.read
    statements: list[tuple[str, Any]] = []

    def recording(sql: str, params: Any = ()) -> list[Any]:
        statements.append((sql, params))
        return read(sql, params)

    jobs.db.read = recording  # type: ignore[method-assign]
    try:
        call()
    finally:
        del jobs.db.read  # the class's method again
    assert statements, "the call read nothing"
    plans = (read(f"EXPLAIN QUERY PLAN {sql}", params) for sql, params in statements)
    return " | ".join(row[3] for plan in plans for row in plan)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="session")
def nginx_present() -> None:
    from app.launcher.nginx import find_nginx

    require("nginx", find_nginx() is not None)


@pytest.fixture
def make_stack(nginx_present: None) -> Iterator[Callable[..., Stack]]:
    """Start a stack with extra settings; every one started is stopped after the test."""
    stacks: list[Stack] = []
    roots: list[Path] = []

    def start(root: Path | None = None, **env: str) -> Stack:
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="fus-"))
            roots.append(root)
        stack = Stack(root, env)
        stacks.append(stack)
        return stack.start()

    yield start
    for stack in stacks:
        stack.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(nginx_present: None) -> Iterator[Stack]:
    """One stack shared by a module's tests that leave it as they found it."""
    root = Path(tempfile.mkdtemp(prefix="fus-"))
    shared = Stack(root, {"MAX_BODY_SIZE": "256k"})
    try:
        yield shared.start()
    finally:
        shared.stop()
        shutil.rmtree(root, ignore_errors=True)
