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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

# Well under HARAKIRI: a request waiting this long for the write lock gets a 503, not a kill.
BUSY_TIMEOUT_MS = 10_000
WAL_AUTOCHECKPOINT_PAGES = 256
WAL_SIZE_LIMIT = 1024 * 1024

# What an OperationalError's SQLite error code says: another writer holds the lock (try again
# soon), or the disk is full or failing (try again once it is freed). Anything else is a bug.
BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
DISK_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    # Extended codes (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT...) carry the primary in the low byte.
    return None if code is None else code & 0xFF


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether another writer holds the lock: worth a retry within a second."""
    return _primary_code(exc) in BUSY_CODES


def is_transient(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is a busy database or a full or failing disk, which pass, not a bug."""
    return _primary_code(exc) in BUSY_CODES | DISK_CODES


def database_files(path: Path) -> tuple[Path, Path, Path]:
    """The database and the two files SQLite keeps beside it in WAL mode."""
    return path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


class Database:
    """Connections to one SQLite file, made lazily per thread and never shared across a fork."""

    def __init__(self, path: Path, migrations: Sequence[str] = ()) -> None:
        self.path = path
        self.migrations = migrations
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
        # A checkpoint every ~1 MB of WAL, and the WAL cut back to this size after each reset:
        # without a limit it keeps its largest size for good, eating the space a full disk frees.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def migrate(self) -> int:
        """Bring the schema to ``len(migrations)``: run, in one transaction, each migration the
        database's ``user_version`` has not seen. Uses a connection of its own, closed at once
        (safe before a fork). Returns the version reached."""
        migrations = self.migrations
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                for script in migrations[version:]:
                    for statement in script.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {max(version, len(migrations))}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return max(version, len(migrations))
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[_Transaction]:
        """A write transaction holding the write lock from its first statement."""
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _Transaction(conn)
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself fails (a full disk): a transaction left open would make
            # every later BEGIN on this connection fail.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        return self.connection().execute(sql, params).fetchall()

    def checkpoint(self) -> tuple[int, int, int]:
        """Copy the WAL into the database and truncate it to nothing, if no reader holds it back;
        returns SQLite's (busy, WAL pages, pages checkpointed)."""
        row = self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def wal_path(self) -> Path:
        return database_files(self.path)[1]


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[tuple[object, ...]]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)
