"""The job store's database: SQLite by default, PostgreSQL when DATABASE_URL names one.

One store code path for both, through the small interface ``Database``: ``write()`` (a
transaction), ``read()``, ``migrate()``, ``checkpoint()``, ``checkpoints_after()`` (SQLite's
housekeeping held back to a block's end) and ``indexed_by()`` (SQLite's index hint); the SQL
is written once, in SQLite's flavour with ``?`` placeholders, and ``PostgresDatabase``
translates what differs. Errors of either driver are caught as ``DATABASE_ERRORS`` and judged
by ``is_busy`` / ``is_transient``.

SQLite (``SqliteDatabase``): every worker, request thread, spooler and mule writes to one file at
once. WAL lets readers run beside the one writer; writers queue for the lock instead of failing (see
``_retry_busy``); writes take the write lock up front (``BEGIN IMMEDIATE``) so a transaction never
has to upgrade a read lock, which is what raises "database is locked" despite any waiting.

PostgreSQL (``PostgresDatabase``): one connection per thread and process, as SQLite's, in
autocommit mode except inside ``write()``; rows locked by ``FOR UPDATE`` where SQLite's write
lock serialises.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import psycopg
import psycopg.conninfo

log = logging.getLogger(__name__)

# Well under HARAKIRI: a request waiting this long for the write lock gets a 503, not a kill.
BUSY_TIMEOUT_MS = 10_000
# How long a writer first sleeps when the lock is held, and at most: SQLite's own busy handler
# sleeps 1, 2, 5, 10... ms, far longer than the lock is held for a job's write (about 50 us); an
# enqueue in a request while the spoolers drained waited 1.4-1.7 ms at the median in it, 0.68 ms
# with these steps.
BUSY_FIRST_SLEEP = 0.00005
BUSY_MAX_SLEEP = 0.0005
# SQLite's own checkpoints (wal_autocheckpoint) are off: each process checkpoints itself every
# CHECKPOINT_EVERY of its commits instead (every WORKER_CHECKPOINT_EVERY in a worker, so that an
# enqueue in a request seldom pays for one), never waiting for a lock (PASSIVE). SQLite's own run
# after every commit once the WAL holds wal_autocheckpoint pages, and under a steady flow of jobs
# the WAL never starts again from its beginning (a writer always finds frames behind it): every
# job's commit then paid a checkpoint, two fdatasyncs and the copy of its pages (2,246 fdatasyncs
# for 2,000 jobs of a batch; the spoolers spent over half their time in COMMIT).
CHECKPOINT_EVERY = 32
WORKER_CHECKPOINT_EVERY = 4 * CHECKPOINT_EVERY
WAL_SIZE_LIMIT = 1024 * 1024
# A WAL that writers never leave alone is never started again by those PASSIVE checkpoints (each
# finds new frames behind it), so under a steady flow of jobs it only grows: 137 MB after 30,000
# jobs, and the first write after the burst paid 36-120 ms to truncate it. Past this size, a
# process that owns checkpoints forces a TRUNCATE checkpoint, looking every WAL_CHECK_EVERY commits.
WAL_RESTART_BYTES = 16 * 1024 * 1024
WAL_CHECK_EVERY = 64
# How long that checkpoint waits for readers and writers (it holds new writers back meanwhile):
# not found idle by then, it gives up until the next look.
WAL_RESTART_WAIT_MS = 200
# Seconds to wait for a PostgreSQL connection before the request gets a 503.
CONNECT_TIMEOUT = 5
# The key of the advisory lock under which replicas migrate one at a time ("fus-migr").
MIGRATION_LOCK = 0x6675732D6D696772

# What either driver raises: the rest of the code catches these, never one driver's errors.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)

# What an OperationalError's SQLite error code says: another writer holds the lock (try again
# soon), or the disk is full or failing (try again once it is freed). Anything else is a bug.
BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
DISK_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})

# PostgreSQL's SQLSTATEs that pass: a conflict with another transaction (serialization failure,
# deadlock, a lock not granted in time: retry soon), and a server that is short of resources,
# shutting down or unreachable (retry later). Anything else (a bad statement) is a bug.
PG_BUSY_STATES = frozenset({"40001", "40P01", "55P03"})
PG_TRANSIENT_CLASSES = ("08", "53", "57P01", "57P02", "57P03", "58030")


def _primary_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    # Extended codes (SQLITE_IOERR_WRITE, SQLITE_BUSY_SNAPSHOT...) carry the primary in the low byte.
    return None if code is None else code & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Whether another writer holds the lock: worth a retry within a second."""
    if isinstance(exc, psycopg.Error):
        return exc.sqlstate in PG_BUSY_STATES
    return _primary_code(exc) in BUSY_CODES


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` passes (a busy database, a full or failing disk, a PostgreSQL server out
    of reach or of resources, or shutting down), rather than a bug."""
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            # No answer from the server: the connection failed or broke.
            return isinstance(exc, psycopg.OperationalError)
        return state in PG_BUSY_STATES or state.startswith(PG_TRANSIENT_CLASSES)
    return _primary_code(exc) in BUSY_CODES | DISK_CODES


def database_files(path: Path) -> tuple[Path, Path, Path]:
    """The database and the two files SQLite keeps beside it in WAL mode."""
    return path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


class Row(Protocol):
    """A row as both drivers return it: ``row[0]``, ``row["name"]`` and ``dict(row)``."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> Any: ...


class Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[object] = ()) -> Any: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> Any: ...


class Database(Protocol):
    """What the job store needs of a database; SQL in SQLite's flavour, ``?`` placeholders."""

    # Appended to a SELECT that reads a row the same transaction then updates.
    for_update: str

    def indexed_by(self, index: str) -> str:
        """Put after a table's name: the index SQLite must read it through (an error if it cannot),
        where its planner, without statistics, would take another."""
        ...

    def write(self) -> AbstractContextManager[Transaction]: ...

    def checkpoints_after(self) -> AbstractContextManager[None]:
        """A block whose commits, in this thread, leave the database's housekeeping (SQLite's
        checkpoints) to its end: an enqueue hands its job over first, then checkpoints."""
        ...

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Any]: ...

    def migrate(self) -> int: ...

    def checkpoint(self) -> tuple[int, int, int]: ...

    def describe(self) -> str: ...


def open_database(url: str, path: Path, migrations: Sequence[str] = (), password: str = "") -> Database:
    """PostgreSQL at ``url`` if given (``password`` overriding the URL's), else SQLite at ``path``."""
    if url:
        return PostgresDatabase(url, migrations, password=password)
    return SqliteDatabase(path, migrations)


class SqliteDatabase:
    """Connections to one SQLite file, made lazily per thread and never shared across a fork."""

    for_update = ""  # BEGIN IMMEDIATE holds the whole database's write lock already

    @staticmethod
    def indexed_by(index: str) -> str:
        return f" INDEXED BY {index}"

    def __init__(self, path: Path, migrations: Sequence[str] = ()) -> None:
        self.path = path
        self.migrations = migrations
        # Whether this process answers requests (a uWSGI worker; set after the fork, before any
        # connection): then SQLite's checkpoints are left to the job processes, which write most
        # (every job's start and end), so that a request seldom waits for one.
        self.serves_requests = False
        self._local = threading.local()

    @property
    def checkpoint_every(self) -> int:
        """The commits of one of this process's connections after which it checkpoints."""
        return WORKER_CHECKPOINT_EVERY if self.serves_requests else CHECKPOINT_EVERY

    @property
    def bounds_wal(self) -> bool:
        """Whether this process's commits bound the WAL (``WAL_RESTART_BYTES``)."""
        return not self.serves_requests

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork: sockets and locks don't survive it)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL is durable across process crashes in WAL mode; only a power cut can lose the
        # last commits, which the spool file (the job's durable copy) then replays.
        conn.execute("PRAGMA synchronous = NORMAL")
        # No checkpoint of SQLite's own after a commit (``write`` makes them, CHECKPOINT_EVERY),
        # and the WAL cut back to 1 MB after each reset: without a limit it keeps its largest
        # size for good, eating the space a full disk frees.
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        # From here a busy database raises at once, and ``_retry_busy`` waits in short steps.
        conn.execute("PRAGMA busy_timeout = 0")
        self._local.conn = conn
        self._local.pid = os.getpid()
        self._local.commits = 0
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
        _retry_busy(conn, "BEGIN IMMEDIATE", ())
        try:
            yield _Transaction(conn)
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself fails (a full disk): a transaction left open would make
            # every later BEGIN on this connection fail.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        local = self._local
        local.commits += 1
        checkpoint = local.commits % self.checkpoint_every == 0
        bound = self.bounds_wal and local.commits % WAL_CHECK_EVERY == 0
        put_off: _PutOff | None = getattr(local, "put_off", None)
        if put_off is not None:
            put_off.checkpoint |= checkpoint
            put_off.bound |= bound
            return
        if checkpoint:
            self._checkpoint_passive(conn)
        if bound:
            self._bound_wal()

    @contextmanager
    def checkpoints_after(self) -> Iterator[None]:
        """The checkpoints that this thread's commits inside the block would make (PASSIVE every
        ``checkpoint_every``, and the WAL's bound) run once, at the outermost block's end, even if
        it raises. One inside an enqueue (a worker's every WORKER_CHECKPOINT_EVERY commits, 1-3
        ms with its fdatasyncs) fell between the job's record and its hand-over, in its queue
        wait: at 200 jobs/s its p99 was 0.92-1.62 ms with it, 0.87-1.49 ms without (6 runs of
        2,000 jobs POSTed, on 2 fresh stacks each way: about the noise of a 2-core machine)."""
        local = self._local
        if getattr(local, "put_off", None) is not None:
            yield  # inside another block: its end runs them
            return
        local.put_off = put_off = _PutOff()
        try:
            yield
        finally:
            local.put_off = None
            if put_off.checkpoint:
                self._checkpoint_passive(self.connection())
            if put_off.bound:
                self._bound_wal()

    def _checkpoint_passive(self, conn: sqlite3.Connection) -> None:
        """Copy into the database what the WAL holds and no reader needs, without waiting for
        any lock; a failure (a full disk) leaves it to the next one: the commit has succeeded."""
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            log.info("checkpoint of %s put off: %s", self.path, exc)

    def _bound_wal(self) -> None:
        """Truncate the WAL if it has grown past ``WAL_RESTART_BYTES``; a reader that holds it
        or a full disk leaves it for a later look (the commit before has succeeded already)."""
        try:
            if self.wal_path().stat().st_size <= WAL_RESTART_BYTES:
                return
            busy, _, _ = self.checkpoint(WAL_RESTART_WAIT_MS)
            why = "a reader held it" if busy else ""
        except (OSError, sqlite3.Error) as exc:
            why = str(exc)
        if why:
            log.warning(
                "the WAL of %s is over %d MB and was not truncated: %s",
                self.path,
                WAL_RESTART_BYTES >> 20,
                why,
            )

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        return _retry_busy(self.connection(), sql, params).fetchall()

    def checkpoint(self, wait_ms: int = BUSY_TIMEOUT_MS) -> tuple[int, int, int]:
        """Copy the WAL into the database and truncate it to nothing, if no reader holds it back
        for longer than ``wait_ms``; returns SQLite's (busy, WAL pages, pages checkpointed)."""
        conn = self.connection()
        # SQLite's busy handler here: a TRUNCATE checkpoint waits in it for readers to finish.
        conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute("PRAGMA busy_timeout = 0")
        return int(row[0]), int(row[1]), int(row[2])

    def describe(self) -> str:
        return str(self.path)

    def wal_path(self) -> Path:
        return database_files(self.path)[1]


def _retry_busy(conn: sqlite3.Connection, sql: str, params: Sequence[object]) -> sqlite3.Cursor:
    """``conn.execute(sql, params)``, tried again while another connection holds the lock, in
    sleeps from 50 us doubling up to 0.5 ms, for at most ``BUSY_TIMEOUT_MS`` (then the busy error
    is raised). Only for a statement that starts a transaction or runs alone: inside a
    transaction SQLite cannot wait for a lock it would need to upgrade to."""
    try:
        return conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        if _primary_code(exc) not in BUSY_CODES:
            raise
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = BUSY_FIRST_SLEEP
    while True:
        time.sleep(pause)
        try:
            return conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if _primary_code(exc) not in BUSY_CODES or time.monotonic() >= deadline:
                raise
        pause = min(pause * 2, BUSY_MAX_SLEEP)


@dataclass
class _PutOff:
    """What the commits inside a ``checkpoints_after`` block made due, for its end."""

    checkpoint: bool = False  # a PASSIVE checkpoint
    bound: bool = False  # a look at the WAL's size (``_bound_wal``)


class _Transaction:
    """A write transaction's statements on SQLite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)


# Column types SQLite accepts that PostgreSQL spells otherwise: REAL is float4 there, whose 24 bits
# lose whole seconds of a time.time(); INTEGER is int4 there, SQLite's is 64-bit.
PG_TYPES = {"REAL": "DOUBLE PRECISION", "INTEGER": "BIGINT", "BLOB": "BYTEA"}
_PG_TYPE = re.compile(r"\b(" + "|".join(PG_TYPES) + r")\b")


def postgres_ddl(statement: str) -> str:
    """A migration statement written for SQLite, with its column types as PostgreSQL names them
    (capitalised type names, whole words only: a column called ``real_time`` stays)."""
    return _PG_TYPE.sub(lambda match: PG_TYPES[match.group(1)], statement)


@lru_cache(maxsize=512)
def postgres_sql(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (and a literal ``%`` doubled); cached, as the
    store's statements are a few dozen strings."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgRow:
    """A PostgreSQL row that reads like ``sqlite3.Row``: by position, by name, and as a dict."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: Mapping[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._names, self._values, strict=True))!r})"


def _pg_row(cursor: Any) -> Any:
    """psycopg's row factory for ``PgRow``."""
    names = {column.name: index for index, column in enumerate(cursor.description or ())}
    return lambda values: PgRow(names, values)


def conninfo_of(url: str, password: str = "") -> str:
    """The libpq connection string: ``url``, its password replaced by ``password`` if given,
    and a connect timeout unless the URL sets one."""
    extra: dict[str, Any] = {}
    if password:
        extra["password"] = password
    if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(url):
        extra["connect_timeout"] = CONNECT_TIMEOUT
    return psycopg.conninfo.make_conninfo(url, **extra)


def describe_url(url: str) -> str:
    """Where a PostgreSQL URL points, as ``host:port/dbname``: never its password."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "PostgreSQL (an unparsable DATABASE_URL)"
    host = str(params.get("host") or "localhost")
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


class PostgresDatabase:
    """Connections to one PostgreSQL database, made lazily per thread and never shared across
    a fork; a broken one is replaced on the next use."""

    for_update = " FOR UPDATE"

    @staticmethod
    def indexed_by(index: str) -> str:
        """Nothing: PostgreSQL has no such hint, and its planner has statistics."""
        return ""

    def __init__(self, url: str, migrations: Sequence[str] = (), *, password: str = "") -> None:
        self.url = url
        self.conninfo = conninfo_of(url, password)
        self.migrations = migrations
        self._local = threading.local()

    def describe(self) -> str:
        return describe_url(self.url)

    def connect(self) -> psycopg.Connection[Any]:
        """A new connection, in autocommit mode; raises ``psycopg.OperationalError`` if the
        server cannot be reached."""
        conn: psycopg.Connection[Any] = psycopg.connect(self.conninfo, autocommit=True, row_factory=_pg_row)
        # A write waiting this long for a row another transaction holds gets a 503 (55P03), as
        # SQLite's busy timeout gives: well under HARAKIRI.
        conn.execute(f"SET lock_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    def connection(self) -> psycopg.Connection[Any]:
        """This thread's connection (a new one after a fork, or once the last one broke)."""
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid() and not conn.closed:
            return conn
        self._local.conn = None
        conn = self.connect()
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    def migrate(self) -> int:
        """Bring the schema to ``len(migrations)`` in one transaction, under an advisory lock so
        that replicas starting at once run each migration once; the version is the one row of
        ``schema_version``. Uses a connection of its own, closed at once (safe before a fork)."""
        migrations = self.migrations
        with psycopg.connect(self.conninfo, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            version = int(row[0]) if row else 0
            for script in migrations[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(postgres_ddl(statement))
            reached = max(version, len(migrations))
            conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (reached,),
            )
        return reached

    @contextmanager
    def write(self) -> Iterator[_PgTransaction]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        conn = self.connection()
        try:
            with conn.transaction():
                yield _PgTransaction(conn)
        except psycopg.Error:
            self._drop_if_broken(conn)
            raise

    def read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        conn = self.connection()
        try:
            return conn.execute(postgres_sql(sql), params).fetchall()
        except psycopg.Error:
            self._drop_if_broken(conn)
            raise

    def checkpoints_after(self) -> AbstractContextManager[None]:
        """Nothing to put off: PostgreSQL checkpoints in a process of its own."""
        return nullcontext()

    def checkpoint(self) -> tuple[int, int, int]:
        """Nothing to do: PostgreSQL manages its own WAL. (0, 0, 0), as SQLite's when not blocked."""
        return 0, 0, 0

    def _drop_if_broken(self, conn: psycopg.Connection[Any]) -> None:
        if conn.broken or conn.closed:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        """Close this thread's connection (the others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _PgTransaction:
    """A write transaction's statements on PostgreSQL."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[object] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(postgres_sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> psycopg.Cursor[Any]:
        cursor = self.conn.cursor()
        cursor.executemany(postgres_sql(sql), rows)
        return cursor
