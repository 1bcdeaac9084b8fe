"""A PostgreSQL server for the tests, from Debian's package: initdb into a temporary directory,
started on a free loopback port with its socket in that directory, stopped and removed after."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

# The tests' superuser and its password (password authentication over TCP, as a real server has).
USER = "fus"
PASSWORD = "fus-test-password"
# initdb and postgres refuse to run as root: as root they run as this user (Debian's package makes it).
SERVER_USER = "postgres"
# The database whose schemas the job-store suite's tests get, one each.
SHARED = "tests"


def find_bindir() -> Path | None:
    """The newest PostgreSQL's binaries: ``pg_config --bindir`` if it has initdb, else
    /usr/lib/postgresql/<newest>/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            bindir = Path(found.stdout.strip())
            if (bindir / "initdb").exists():
                return bindir
        except (OSError, subprocess.CalledProcessError):
            pass
    candidates = sorted(
        (Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


class PostgresServer:
    """One server; ``new_database()`` gives each test a database of its own."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="fus-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.started = False
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(SERVER_USER)
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
            shutil.chown(self.root, SERVER_USER)
            self.prefix = ["runuser", "-u", SERVER_USER, "--"]

    def url(self, dbname: str = "postgres", password: str | None = PASSWORD) -> str:
        secret = f":{password}" if password is not None else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *command: str) -> None:
        subprocess.run([*self.prefix, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self.prefix:
            shutil.chown(pwfile, SERVER_USER)
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            USER,
            "--pwfile",
            str(pwfile),
            "--auth-host",
            "scram-sha-256",
            "--auth-local",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        # Tests need no durability across a power cut: no fsync, for speed.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "start", "--pgdata", str(self.data), "--log", str(self.log),
            "--wait", "--timeout", "60", "-o", options,
        )  # fmt: skip
        self.started = True
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {SHARED}")
        return self

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.url(), autocommit=True)

    def new_schema(self) -> str:
        """The URL of a fresh, empty schema of the shared database ``tests`` (its search_path):
        as fresh as a database of its own, in a few ms where CREATE DATABASE takes 0.2 s."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(SHARED), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(SHARED)}?options=-csearch_path%3D{name}"

    def drop_schema(self, url: str) -> None:
        name = url.rsplit("%3D", 1)[1]
        with psycopg.connect(self.url(SHARED), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    def new_database(self) -> str:
        """A fresh, empty database; its name."""
        name = f"test_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            if self.started:
                self._run(
                    str(self.bindir / "pg_ctl"), "stop", "--pgdata", str(self.data), "--mode", "immediate"
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
