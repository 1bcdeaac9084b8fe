"""The embedded SQLite database: WAL mode, one connection per thread and process.

Every worker, request thread, spooler and mule writes here at once. WAL lets readers run
beside the one writer; a busy timeout makes writers queue instead of failing; writes take the
write lock up front (``BEGIN IMMEDIATE``) so a transaction never has to upgrade a read lock,
which is what raises "database is locked" despite the busy timeout.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Well under HARAKIRI: a request waiting this long for the write lock gets a 503, not a kill.
BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    backend TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout REAL,
    result TEXT,
    error TEXT,
    progress REAL,
    progress_message TEXT,
    request_id TEXT,
    unique_key TEXT UNIQUE,
    dispatch TEXT,
    run_at REAL,
    pid INTEGER,
    deadline REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at DESC);
CREATE INDEX IF NOT EXISTS jobs_by_task ON jobs (task, created_at DESC);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class Database:
    """Connections to one SQLite file, made lazily per thread and never shared across a fork."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork: sockets and locks don't survive it)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across process crashes in WAL mode; only a power cut can lose the
        # last commits, which the spool file (the job's durable copy) then replays.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def migrate(self) -> None:
        """Create the schema with a connection of its own, closed at once: safe before a fork."""
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
        finally:
            conn.close()

    @contextmanager
    def write(self, conn: sqlite3.Connection | None = None) -> Iterator[_Transaction]:
        """A write transaction holding the write lock from its first statement."""
        conn = conn or self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _Transaction(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def ping(self) -> None:
        """Raises ``sqlite3.Error`` when the database cannot be read."""
        self.connection().execute("SELECT count(*) FROM jobs").fetchone()


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)
