"""Job records in the job store (SQLite or PostgreSQL): one row per job, moved from state to state
in write transactions."""

from __future__ import annotations

import builtins
import json
import os
import time
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from app.db import Database, Transaction
from app.jobs import owner
from app.jobs.owner import Owner
from app.jobs.states import FINISHED, WAITING, JobStatus

UNFINISHED = (*WAITING, JobStatus.RUNNING)


def _is_one_of(statuses: Sequence[JobStatus]) -> str:
    """``status = 'a' OR status = 'b' ...``: the condition of the partial indexes of migration 6,
    which a query repeats word for word for SQLite to use them. An ``IN`` list would be slower
    there: SQLite builds a temporary table for a list of more than two, at every UPDATE that
    checks whether a row enters or leaves the index."""
    return " OR ".join(f"status = '{status}'" for status in statuses)


# Jobs through ``jobs_unfinished`` (by node, task and backend) and ``jobs_finished`` (by task,
# backend and status, which counts them without reading the table).
IS_UNFINISHED = _is_one_of(UNFINISHED)
IS_FINISHED = _is_one_of(FINISHED)


def _marks(values: Sized) -> str:
    """SQL placeholders, one per value."""
    return ", ".join("?" * len(values))


def error_record(kind: str, message: str) -> dict[str, Any]:
    """An error as a job record keeps it, for failures that raised no exception here."""
    return {"type": kind, "message": message, "traceback": None}


def new_job_id(now: float) -> str:
    """A job id: 32 hex digits, the first 12 the creation time in milliseconds (as a UUIDv7's),
    the other 20 random. Ids of new jobs then land at the end of the primary key's index,
    where a random id (uuid4) touched a random page of it on every insert; and they sort by age."""
    return f"{int(now * 1000):012x}{os.urandom(10).hex()}"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Job:
    """One job record, as read from the store."""

    id: str
    task: str
    args: Any
    backend: str
    status: JobStatus
    attempts: int
    max_attempts: int
    timeout: float | None
    result: Any
    error: dict[str, Any] | None
    progress: float | None
    progress_message: str | None
    request_id: str | None
    unique_key: str | None
    handle: str | None
    run_at: float | None
    pid: int | None
    owner: str | None
    node: str | None
    deadline: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float

    @property
    def holder(self) -> Owner | None:
        """The process that runs (or ran) the current attempt, if this version recorded it."""
        return Owner.parse(self.owner)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        data = dict(row)
        data["status"] = JobStatus(data["status"])
        data["args"] = json.loads(data["args"])
        data["result"] = json.loads(data["result"]) if data["result"] is not None else None
        data["error"] = json.loads(data["error"]) if data["error"] is not None else None
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """The record as the API shows it (times in ISO 8601, UTC)."""
        return {
            "id": self.id,
            "task": self.task,
            "args": self.args,
            "backend": self.backend,
            "status": self.status,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "result": self.result,
            "error": self.error,
            "progress": self.progress,
            "progress_message": self.progress_message,
            "request_id": self.request_id,
            "run_at": _iso(self.run_at),
            "pid": self.pid,
            "node": self.node,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


class Verdict(StrEnum):
    """What ``JobStore.claim`` found: a claim's answer, not a job's state."""

    RUN = "run"  # the attempt has started: run the task
    SKIP = "skip"  # nothing to do: no such job, or it is not waiting
    BUSY = "busy"  # another live process runs it
    LOST = "lost"  # its last attempt was lost and none remain: the job has just failed


@dataclass(frozen=True)
class Claim:
    job: Job | None
    verdict: Verdict
    error: dict[str, Any] | None = None


class JobStore:
    """Reads and moves job records; every method is safe from any process or thread."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        *,
        task: str,
        args_json: str,
        backend: str,
        max_attempts: int,
        timeout: float | None,
        run_at: float | None,
        request_id: str | None,
        unique_key: str | None = None,
        handle: str | None = None,
        job_id: str | None = None,
    ) -> Job | None:
        """Insert a new record (with ``job_id``, one of ``new_job_id``'s, or a new one); returns
        it, or None when ``unique_key`` is already taken."""
        values = self._new_record(
            task, args_json, backend, max_attempts, timeout, run_at, request_id, handle, job_id
        )
        values["unique_key"] = unique_key
        with self.db.write() as tx:
            cursor = tx.execute(
                f"INSERT INTO jobs ({', '.join(values)}) VALUES ({_marks(values)})"
                " ON CONFLICT (unique_key) DO NOTHING",
                tuple(values.values()),
            )
            if cursor.rowcount == 0:
                return None
        return _created(values)

    def create_many(
        self,
        *,
        task: str,
        args_jsons: Sequence[str],
        backend: str,
        max_attempts: int,
        timeout: float | None,
        request_id: str | None,
        handle: str | None = None,
    ) -> list[Job]:
        """Insert one queued record per ``args_jsons`` item in a single transaction (one write
        lock, one commit for them all); returns them, in order."""
        records = [
            self._new_record(task, args_json, backend, max_attempts, timeout, None, request_id, handle)
            for args_json in args_jsons
        ]
        if not records:
            return []
        columns = list(records[0])
        with self.db.write() as tx:
            tx.executemany(
                f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({_marks(columns)})",
                [tuple(record.values()) for record in records],
            )
        return [_created(record) for record in records]

    @staticmethod
    def _new_record(
        task: str,
        args_json: str,
        backend: str,
        max_attempts: int,
        timeout: float | None,
        run_at: float | None,
        request_id: str | None,
        handle: str | None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        status = JobStatus.SCHEDULED if run_at is not None and run_at > now else JobStatus.QUEUED
        return {
            "id": job_id or new_job_id(now),
            "task": task,
            "args": args_json,
            "backend": backend,
            "status": status,
            "max_attempts": max_attempts,
            "timeout": timeout,
            "request_id": request_id,
            "handle": handle,
            "node": owner.node_id(),
            "run_at": run_at,
            "created_at": now,
            "updated_at": now,
        }

    def get(self, job_id: str) -> Job | None:
        rows = self.db.read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(rows[0]) if rows else None

    def get_by_unique_key(self, unique_key: str) -> Job | None:
        rows = self.db.read("SELECT * FROM jobs WHERE unique_key = ?", (unique_key,))
        return Job.from_row(rows[0]) if rows else None

    def list(
        self,
        *,
        status: JobStatus | None = None,
        task: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[Job]:
        """Newest first; ``before`` is the (created_at, id) of the last job of the previous page."""
        clauses: list[str] = []
        params: list[object] = []
        if status:
            clauses.append("status = ?")
            params.append(status)
        if task:
            clauses.append("task = ?")
            params.append(task)
        if before:
            clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
            params.extend([before[0], before[0], before[1]])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.read(
            f"SELECT * FROM jobs {where} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [Job.from_row(row) for row in rows]

    def counts(self) -> builtins.list[tuple[str, str, JobStatus, int]]:
        """How many records there are, as (task, backend, status, count) rows: the finished ones
        counted within their index, the unfinished (the backlog, far fewer) through theirs."""
        rows = self.db.read(
            f"SELECT task, backend, status, count(*) FROM jobs{self.db.indexed_by('jobs_finished')}"
            f" WHERE ({IS_FINISHED}) GROUP BY task, backend, status"
            f" UNION ALL SELECT task, backend, status, count(*) FROM jobs WHERE ({IS_UNFINISHED})"
            " GROUP BY task, backend, status"
        )
        return [(row[0], row[1], JobStatus(row[2]), row[3]) for row in rows]

    def set_handle(self, job_id: str, handle: str, backend: str) -> None:
        """Remember the backend's handle on the job (a spool file's path), and which backend."""
        with self.db.write() as tx:
            tx.execute(
                "UPDATE jobs SET handle = ?, backend = ?, updated_at = ? WHERE id = ?",
                (handle, backend, time.time(), job_id),
            )

    def claim(
        self,
        job_id: str,
        *,
        allow_rerun: bool,
        handle: str | None = None,
        succeeded: tuple[Job, str] | None = None,
    ) -> Claim:
        """Start the job's next attempt, or say why not (see ``Claim``).

        ``succeeded``, a (job, result JSON) whose success is not recorded yet, is recorded in
        the same transaction, first: the spooler running a batch file records each job's end
        with the next one's start, one write transaction per job instead of two.

        A record found ``running`` whose owner is gone means the last attempt died (killed,
        timed out, crashed, or its run ended with a restart). With ``allow_rerun`` (the spooler,
        whose file survived) that attempt is recorded as lost and a new one starts if attempts
        remain, else the job fails. A record still ``running`` in another live process is left
        to it (``busy``). A ``handle`` given replaces the record's (the spooler names the file
        it runs, in case recording it at the handover failed).

        Across nodes (``allow_rerun``): a record whose ``node`` is another live node was adopted
        by it, so this copy is stale (a node back with its old spool files) and is skipped; a
        record of a dead node (or of none: older records) is adopted here by this claim.
        """
        now = time.time()
        me = owner.here()
        with self.db.write() as tx:
            if succeeded is not None:
                self._succeed_in(tx, *succeeded, now)
            # FOR UPDATE on PostgreSQL: two claims of one job queue here, as SQLite's write lock makes them.
            row = tx.execute(f"SELECT * FROM jobs WHERE id = ?{self.db.for_update}", (job_id,)).fetchone()
            if row is None:
                return Claim(None, Verdict.SKIP)
            job = Job.from_row(row)
            lost = None
            if allow_rerun and job.node not in (None, me.node) and owner.node_alive(job.node):
                return Claim(job, Verdict.SKIP)
            if job.status == JobStatus.RUNNING:
                if not allow_rerun:
                    return Claim(job, Verdict.SKIP)
                if job.holder != me and owner.alive(job.holder):
                    return Claim(job, Verdict.BUSY)
                lost = lost_attempt_error(job, now)
                if job.attempts >= job.max_attempts:
                    tx.execute(
                        "UPDATE jobs SET status = ?, error = ?, finished_at = ?, updated_at = ? WHERE id = ?",
                        (JobStatus.FAILED, json.dumps(lost), now, now, job_id),
                    )
                    return Claim(job, Verdict.LOST, lost)
            elif job.status not in WAITING:
                return Claim(job, Verdict.SKIP)
            # The record as this UPDATE leaves it, made here rather than read back: the write
            # lock, which every enqueue and job waits for, is held one statement less.
            claimed = replace(
                job,
                status=JobStatus.RUNNING,
                attempts=job.attempts + 1,
                started_at=now,
                pid=me.pid,
                owner=str(me),
                node=me.node,
                handle=handle if handle is not None else job.handle,
                deadline=now + job.timeout if job.timeout else None,
                error=lost if lost else job.error,
                progress=None,
                progress_message=None,
                updated_at=now,
            )
            tx.execute(
                "UPDATE jobs SET status = ?, attempts = ?, started_at = ?, pid = ?, owner = ?, node = ?,"
                " handle = ?, deadline = ?, error = ?, progress = NULL, progress_message = NULL,"
                " updated_at = ? WHERE id = ?",
                (
                    claimed.status,
                    claimed.attempts,
                    now,
                    claimed.pid,
                    claimed.owner,
                    claimed.node,
                    claimed.handle,
                    claimed.deadline,
                    json.dumps(claimed.error) if claimed.error is not None else None,
                    now,
                    job_id,
                ),
            )
        return Claim(claimed, Verdict.RUN)

    def succeed(self, job: Job, result_json: str) -> bool:
        """Record the attempt's result; False if the record moved on meanwhile (reaped)."""
        with self.db.write() as tx:
            return self._succeed_in(tx, job, result_json, time.time())

    @staticmethod
    def _succeed_in(tx: Transaction, job: Job, result_json: str, now: float) -> bool:
        cursor = tx.execute(
            "UPDATE jobs SET status = ?, result = ?, finished_at = ?, progress = 1.0,"
            " updated_at = ? WHERE id = ? AND status = ? AND attempts = ?",
            (JobStatus.SUCCEEDED, result_json, now, now, job.id, JobStatus.RUNNING, job.attempts),
        )
        return bool(cursor.rowcount == 1)

    def fail_attempt(self, job: Job, error: dict[str, Any], retry_at: float | None) -> bool:
        """Record a failed or lost attempt: ``retrying`` until ``retry_at``, or ``failed`` if
        None; False if the record moved on meanwhile."""
        now = time.time()
        status = JobStatus.RETRYING if retry_at is not None else JobStatus.FAILED
        with self.db.write() as tx:
            cursor = tx.execute(
                "UPDATE jobs SET status = ?, error = ?, run_at = ?, finished_at = ?,"
                " updated_at = ? WHERE id = ? AND status = ? AND attempts = ?",
                (
                    status,
                    json.dumps(error),
                    retry_at,
                    None if retry_at is not None else now,
                    now,
                    job.id,
                    JobStatus.RUNNING,
                    job.attempts,
                ),
            )
            return cursor.rowcount == 1

    def fail_unstarted(self, job_id: str, error: dict[str, Any]) -> bool:
        """Fail a job that has not started (it could not be handed over, or its handover was
        lost); False if it has started or finished meanwhile."""
        return self._finish_unstarted(job_id, JobStatus.FAILED, error)

    def cancel(self, job_id: str) -> bool:
        """Cancel a job that has not started; False if it has started or finished."""
        return self._finish_unstarted(job_id, JobStatus.CANCELLED, None)

    def _finish_unstarted(self, job_id: str, status: JobStatus, error: dict[str, Any] | None) -> bool:
        now = time.time()
        with self.db.write() as tx:
            cursor = tx.execute(
                "UPDATE jobs SET status = ?, error = coalesce(?, error), finished_at = ?, updated_at = ?"
                f" WHERE id = ? AND status IN ({_marks(WAITING)})",
                (status, json.dumps(error) if error else None, now, now, job_id, *WAITING),
            )
            return cursor.rowcount == 1

    def report_progress(self, job_id: str, progress: float, message: str | None) -> None:
        with self.db.write() as tx:
            tx.execute(
                "UPDATE jobs SET progress = ?, progress_message = ?, updated_at = ?"
                " WHERE id = ? AND status = ?",
                (progress, message, time.time(), job_id, JobStatus.RUNNING),
            )

    def requeue(self, job_id: str, extra_attempts: int, handle: str | None) -> Job | None:
        """Put a failed or cancelled job back in the queue with ``extra_attempts`` more tries,
        held by this node (whose backend it is handed to next)."""
        now = time.time()
        with self.db.write() as tx:
            cursor = tx.execute(
                "UPDATE jobs SET status = ?, max_attempts = attempts + ?, run_at = NULL,"
                " finished_at = NULL, handle = ?, node = ?, updated_at = ?"
                " WHERE id = ? AND status IN (?, ?)",
                (
                    JobStatus.QUEUED,
                    extra_attempts,
                    handle,
                    owner.node_id(),
                    now,
                    job_id,
                    JobStatus.FAILED,
                    JobStatus.CANCELLED,
                ),
            )
            if cursor.rowcount == 0:
                return None
        return self.get(job_id)

    def reap_candidates(self, volatile_backends: Iterable[str]) -> builtins.list[Job]:
        """Jobs this node's reaper looks at: every running one held here, and the queued jobs
        of the backends whose handover can be lost (a durable backlog, such as spool files, is
        the bulk and safe). Those of other nodes are their reapers' (or, dead, ``of_node``'s)."""
        names = tuple(volatile_backends)
        rows = self.db.read(
            f"SELECT * FROM jobs WHERE (status = ? OR (status = ? AND backend IN ({_marks(names)})))"
            " AND (node = ? OR node IS NULL)",
            (JobStatus.RUNNING, JobStatus.QUEUED, *names, owner.node_id()),
        )
        return [Job.from_row(row) for row in rows]

    def of_node(self, node: str, spooled_waiting: bool, limit: int) -> builtins.list[Job]:
        """Up to ``limit`` unfinished jobs held by ``node``, through ``jobs_unfinished``: its waiting
        spooler jobs if ``spooled_waiting``, else the rest (running ones, and waiting jobs of
        the other backends)."""
        spooled = "backend = ? AND status IN (?, ?, ?)"
        where = spooled if spooled_waiting else f"(status = ? OR NOT ({spooled}))"
        params: tuple[object, ...] = ("spooler", *WAITING)
        if not spooled_waiting:
            params = (JobStatus.RUNNING, *params)
        rows = self.db.read(
            f"SELECT * FROM jobs WHERE node = ? AND ({IS_UNFINISHED}) AND {where} LIMIT ?",
            (node, *params, limit),
        )
        return [Job.from_row(row) for row in rows]

    def adopt(self, job_ids: Sequence[str], from_node: str) -> int:
        """Move the waiting jobs ``job_ids`` from ``from_node`` to this one, in one conditional
        UPDATE: a job another node adopted meanwhile, or that has started or ended, is left.
        Their handles stay: the spooler recorded the new file's path of a delayed job (which a
        cancel needs), and a due one's claim records it. Returns how many moved."""
        if not job_ids:
            return 0
        with self.db.write() as tx:
            cursor = tx.execute(
                f"UPDATE jobs SET node = ?, updated_at = ? WHERE id IN ({_marks(job_ids)})"
                f" AND node = ? AND status IN ({_marks(WAITING)})",
                (owner.node_id(), time.time(), *job_ids, from_node, *WAITING),
            )
            return cursor.rowcount

    def adopt_lost_attempt(self, job: Job, error: dict[str, Any]) -> JobStatus | None:
        """Record the running ``job``'s attempt as lost with its node: the job waits here for
        its next attempt (``retrying``, due now) or, none remaining, fails. Conditional on the
        record being as read, so that of two reapers one alone adopts it; returns the status
        it was given, or None when the record had moved on."""
        now = time.time()
        again = job.attempts < job.max_attempts
        status = JobStatus.RETRYING if again else JobStatus.FAILED
        with self.db.write() as tx:
            cursor = tx.execute(
                "UPDATE jobs SET status = ?, error = ?, run_at = ?, finished_at = ?, node = ?,"
                " handle = NULL, updated_at = ? WHERE id = ? AND status = ? AND attempts = ? AND node = ?",
                (
                    status,
                    json.dumps(error),
                    now if again else None,
                    None if again else now,
                    owner.node_id(),
                    now,
                    job.id,
                    JobStatus.RUNNING,
                    job.attempts,
                    job.node,
                ),
            )
            return status if cursor.rowcount == 1 else None

    def beat(self, node: str, run: str, pid: int, started_at: float) -> None:
        """Record that run ``run`` of ``node`` (master ``pid``) is alive now."""
        now = time.time()
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO nodes (node, run, host, pid, started_at, beat_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (node, run) DO UPDATE SET beat_at = excluded.beat_at",
                (node, run, owner.host_name(), pid, started_at, now),
            )

    def last_beat(self, node: str, run: str) -> float | None:
        rows = self.db.read("SELECT beat_at FROM nodes WHERE node = ? AND run = ?", (node, run))
        return float(rows[0][0]) if rows else None

    def beats(self) -> dict[tuple[str, str], float]:
        """Each (node, run)'s last heartbeat."""
        return {(row[0], row[1]): row[2] for row in self.db.read("SELECT node, run, beat_at FROM nodes")}

    def nodes(self) -> builtins.list[dict[str, Any]]:
        """The heartbeat rows, newest beat first."""
        rows = self.db.read(
            "SELECT node, run, host, pid, started_at, beat_at FROM nodes ORDER BY beat_at DESC"
        )
        return [dict(row) for row in rows]

    def prune_nodes(self, before: float) -> int:
        """Forget the runs that last beat before ``before``, unless theirs is a dead node that
        still holds unfinished jobs (whose heartbeat says it is dead); returns how many."""
        with self.db.write() as tx:
            cursor = tx.execute(
                "DELETE FROM nodes WHERE beat_at < ? AND (node IN (SELECT node FROM nodes WHERE beat_at >= ?)"
                f" OR NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.node = nodes.node AND ({IS_UNFINISHED})))",
                (before, before),
            )
            return cursor.rowcount

    def record_readiness(self) -> None:
        """Commit a one-row write: raises one of ``DATABASE_ERRORS`` when the database cannot take one
        (a full disk fails the commit, which must reach the WAL file, not a rolled-back write)."""
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO readiness (id, checked_at, pid) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at, pid = excluded.pid",
                (time.time(), os.getpid()),
            )

    def purge(self, older_than: float) -> int:
        """Delete finished records whose end is before ``older_than``; returns how many."""
        with self.db.write() as tx:
            cursor = tx.execute(
                f"DELETE FROM jobs WHERE status IN ({_marks(FINISHED)}) AND finished_at < ?",
                (*FINISHED, older_than),
            )
            return cursor.rowcount


def _created(values: dict[str, Any]) -> Job:
    """The record just inserted with ``values``, as a read would return it (without the read)."""
    return Job(
        id=values["id"],
        task=values["task"],
        args=json.loads(values["args"]),
        backend=values["backend"],
        status=values["status"],
        attempts=0,
        max_attempts=values["max_attempts"],
        timeout=values["timeout"],
        result=None,
        error=None,
        progress=None,
        progress_message=None,
        request_id=values["request_id"],
        unique_key=values.get("unique_key"),
        handle=values["handle"],
        run_at=values["run_at"],
        pid=None,
        owner=None,
        node=values["node"],
        deadline=None,
        created_at=values["created_at"],
        started_at=None,
        finished_at=None,
        updated_at=values["updated_at"],
    )


def lost_attempt_error(job: Job, now: float) -> dict[str, Any]:
    """The error recorded for an attempt whose owner is gone: its timeout, a crash, a restart;
    or, found in its own process, an attempt whose outcome could not be recorded."""
    holder = job.holder
    if holder == owner.here():
        return error_record(
            "InternalError", f"attempt {job.attempts} ended without its outcome recorded (see the log)"
        )
    if job.deadline is not None and now >= job.deadline:
        return error_record(
            "TimeoutError", f"attempt {job.attempts} ran past its {job.timeout:g} s timeout and was killed"
        )
    if holder is not None and holder.node != owner.node_id():
        return error_record(
            "WorkerLost",
            f"attempt {job.attempts}: node {holder.node} stopped beating (no heartbeat for"
            f" {owner.heartbeat_timeout():g} s) before its process {holder.pid} finished the job",
        )
    if holder is not None and holder.run != owner.current_run():
        return error_record(
            "WorkerLost",
            f"attempt {job.attempts}: uWSGI restarted or reloaded (run {holder.run} ended)"
            f" before process {holder.pid} finished the job",
        )
    return error_record(
        "WorkerLost", f"attempt {job.attempts}: process {job.pid} died before the job finished"
    )
