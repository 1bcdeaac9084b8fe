"""The job store's database: migrations that reach existing databases, transactions that
survive a failed COMMIT, and database errors answered by what they mean."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask

from app import db as db_module
from app.db import SqliteDatabase
from app.jobs import JobError, Jobs, owner
from app.jobs.backends.spooler import BATCH_JOBS, SPOOL_OK, SPOOL_RETRY, SpoolerBackend
from app.jobs.maintenance import purge
from app.jobs.runner import OutcomeNotRecorded, Runner
from app.jobs.schema import MIGRATIONS
from app.jobs.states import JobStatus
from app.jobs.store import IS_FINISHED, IS_UNFINISHED, JobStore, new_job_id
from tests.conftest import MakeJob, query_plan

# The job-store suite: each test that builds an app runs on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_databases


def test_a_database_made_before_schema_versions_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute(
        "INSERT INTO jobs (id, task, args, backend, status, max_attempts, dispatch, created_at,"
        " updated_at) VALUES ('j1', 'diag.noop', '{}', 'spooler', 'queued', 1, '/spool/f', 0, 0)"
    )
    old.commit()
    old.close()
    db = SqliteDatabase(path, MIGRATIONS)
    assert db.migrate() == len(MIGRATIONS)
    assert db.migrate() == len(MIGRATIONS)  # again: nothing to do
    row = db.read("SELECT handle, owner FROM jobs WHERE id = 'j1'")[0]
    assert (row["handle"], row["owner"]) == ("/spool/f", None)
    assert db.read("PRAGMA user_version")[0][0] == len(MIGRATIONS)


def test_the_counts_are_the_records_in_every_state(jobs: Jobs, make_job: MakeJob) -> None:
    """``counts`` reads finished and unfinished records through two different indexes (migration
    6): every state is on one side or the other, once."""
    for status in JobStatus:
        for task, backend in (("diag.noop", "spooler"), ("diag.noop", "mule"), ("diag.fail", "spooler")):
            for _ in range(1 + len(status) % 3):
                job = make_job(task, backend=backend)
                with jobs.db.write() as tx:
                    tx.execute("UPDATE jobs SET status = ? WHERE id = ?", (status, job.id))
    counted = jobs.db.read("SELECT task, backend, status, count(*) FROM jobs GROUP BY task, backend, status")
    assert len(counted) == 3 * len(JobStatus)
    assert sorted(jobs.store.counts()) == sorted((row[0], row[1], row[2], row[3]) for row in counted)


@pytest.mark.sqlite_only("reads SQLite's schema and query plans")
def test_the_stores_queries_name_the_partial_indexes_conditions_word_for_word(jobs: Jobs) -> None:
    """SQLite uses a partial index only for a query that repeats its condition: the store's
    (``IS_UNFINISHED``, ``IS_FINISHED``) must stay those migration 6 wrote."""
    made = dict(jobs.db.read("SELECT name, sql FROM sqlite_master WHERE type = 'index'"))
    assert f"WHERE {IS_UNFINISHED}" in " ".join(made["jobs_unfinished"].split())
    assert f"WHERE {IS_FINISHED}" in " ".join(made["jobs_finished"].split())
    assert "jobs_by_node" not in made and "jobs_by_task_state" not in made
    finished, _, _ = query_plan(jobs, jobs.store.counts).partition("UNION ALL")
    assert "COVERING INDEX jobs_finished" in finished and "TEMP B-TREE" not in finished, finished


@pytest.mark.sqlite_only("counts the pages SQLite writes to its WAL")
def test_a_jobs_start_and_end_write_few_pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim and a success write the row and one page of each index whose key they change.
    Three indexes keyed by the state (migrations 1-5) made it 9 pages per claim-and-success of
    a batch, 5 with migration 6; each page is written at every commit, and again by the
    checkpoint."""
    db = SqliteDatabase(tmp_path / "jobs.sqlite3", MIGRATIONS)
    db.migrate()
    monkeypatch.setattr(db, "_checkpoint_passive", lambda conn: None)
    monkeypatch.setattr(db_module, "WAL_CHECK_EVERY", 10**9)
    store = JobStore(db)
    made = store.create_many(
        task="diag.noop",
        args_jsons=["{}"] * 2000,
        backend="spooler",
        max_attempts=1,
        timeout=None,
        request_id=None,
    )
    db.checkpoint()
    succeeded = None
    for job in made:  # as a batch file runs them: each success with the next job's claim
        claim = store.claim(job.id, allow_rerun=True, succeeded=succeeded)
        assert claim.job is not None
        succeeded = (claim.job, "null")
    frames = (db.wal_path().stat().st_size - 32) / (4096 + 24)
    assert frames / len(made) < 6.5
    assert {row[0] for row in db.read("SELECT status FROM jobs")} == {"running", "succeeded"}


def test_a_failed_commit_leaves_the_connection_usable(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    conn = db.connection()
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    # A deferred constraint fails at COMMIT, as a full disk does.
    with pytest.raises(sqlite3.IntegrityError), db.write() as tx:
        tx.execute("INSERT INTO child VALUES (7)")
    assert not conn.in_transaction
    with db.write() as tx:
        tx.execute("INSERT INTO parent VALUES (7)")
    assert db.read("SELECT count(*) FROM parent")[0][0] == 1


def test_a_writer_waits_for_the_lock_in_steps_far_below_sqlites_first_millisecond(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While another connection holds the write lock, a writer retries after sleeps starting at
    50 us and never above 0.5 ms (SQLite's own busy handler sleeps 1, 2, 5, 10... ms, far
    longer than a job's write holds the lock); a reader never waits for it (WAL)."""
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    with db.write() as tx:
        tx.execute("CREATE TABLE t (x INTEGER)")
    holder = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 8:
            holder.execute("COMMIT")  # the holder is done after the writer's 8th pause

    monkeypatch.setattr(db_module.time, "sleep", sleep)
    try:
        assert db.read("SELECT count(*) FROM t")[0][0] == 0
        with db.write() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
    finally:
        holder.close()
    assert len(pauses) == 8
    assert pauses[0] <= 0.0001 and max(pauses) <= 0.0005, pauses
    assert db.read("SELECT count(*) FROM t")[0][0] == 1


def test_a_writer_gives_up_with_the_busy_error_after_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 50)
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    with db.write() as tx:
        tx.execute("CREATE TABLE t (x INTEGER)")
    holder = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError) as raised, db.write() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
        assert db_module.is_busy(raised.value)
        assert 0.05 <= time.monotonic() - started < 1
    finally:
        holder.close()


@pytest.mark.sqlite_only("PostgreSQL checkpoints by itself")
def test_a_workers_commits_leave_sqlites_checkpoints_to_the_job_processes(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After uWSGI's fork, a worker's connections checkpoint every 4x the commits a spooler's or
    a mule's do, and never force one: the processes that write every job's start and end
    checkpoint, not an enqueue."""
    assert isinstance(jobs.db, SqliteDatabase)
    monkeypatch.setattr(jobs.db, "serves_requests", jobs.db.serves_requests)
    monkeypatch.setattr(jobs.heartbeat, "start", lambda: None)
    jobs.after_fork(0)  # a spooler or a mule
    assert jobs.db.checkpoint_every == db_module.CHECKPOINT_EVERY
    assert jobs.db.bounds_wal
    jobs.after_fork(1)  # worker 1
    assert jobs.db.checkpoint_every == db_module.WORKER_CHECKPOINT_EVERY > db_module.CHECKPOINT_EVERY
    assert not jobs.db.bounds_wal  # no request waits for a forced checkpoint
    # No connection (each of a worker's threads makes its own) checkpoints after its commits by
    # itself: SQLite's would, once the WAL is past its pages, after every commit.
    with ThreadPoolExecutor(1) as thread:
        autocheckpoint = thread.submit(jobs.db.read, "PRAGMA wal_autocheckpoint").result()[0][0]
    assert autocheckpoint == 0


class RecordingSpooler:
    """uwsgi.spool that notes each file it is handed in ``events`` (single jobs and batches)."""

    def __init__(self, directory: Path, events: list[str]) -> None:
        self.directory = directory
        self.events = events
        self.refuse = False

    def spool(self, message: dict[bytes, bytes]) -> bytes:
        if self.refuse:
            raise ValueError("unable to spool job")
        self.events.append("spooled")
        return bytes(self.directory / f"uwsgi_spoolfile_{len(self.events)}")


@pytest.mark.sqlite_only("PostgreSQL checkpoints by itself")
def test_an_enqueue_hands_its_job_over_before_the_checkpoints_its_commits_made_due(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint (1-3 ms with its fdatasyncs) or a WAL bound due in an enqueue's commits
    runs once the job is with the spooler, not between its record and its spool file, in the
    job's queue wait; and still runs when the spooler refuses the job."""
    events: list[str] = []
    monkeypatch.setattr(SqliteDatabase, "checkpoint_every", property(lambda self: 1))
    monkeypatch.setattr(db_module, "WAL_CHECK_EVERY", 1)
    monkeypatch.setattr(jobs.db, "_checkpoint_passive", lambda conn: events.append("checkpoint"))
    monkeypatch.setattr(jobs.db, "_bound_wal", lambda: events.append("bound"))
    spooler = RecordingSpooler(tmp_path, events)
    monkeypatch.setitem(jobs.backends, "spooler", SpoolerBackend(spooler, tmp_path, jobs.store))  # type: ignore[arg-type]
    jobs.enqueue("diag.noop", backend="spooler")
    assert events == ["spooled", "checkpoint", "bound"]
    events.clear()
    jobs.enqueue_many("diag.noop", [{}] * (BATCH_JOBS + 1), backend="spooler")  # two files
    assert events == ["spooled", "spooled", "checkpoint", "bound"]
    events.clear()
    spooler.refuse = True
    with pytest.raises(JobError):
        jobs.enqueue("diag.noop", backend="spooler")
    assert events == ["checkpoint", "bound"]  # after the refused job's failure was recorded
    events.clear()
    with jobs.db.write() as tx:  # outside an enqueue: at once, as before
        tx.execute("SELECT 1")
    assert events == ["checkpoint", "bound"]


def test_checkpoints_put_off_by_nested_blocks_run_once_at_the_outer_end(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    made: list[int] = []
    db._checkpoint_passive = lambda conn: made.append(db._local.commits)  # type: ignore[method-assign]
    db.connection().execute("CREATE TABLE t (x)")
    with db.checkpoints_after():
        for _ in range(db.checkpoint_every - 1):
            with db.write() as tx:
                tx.execute("INSERT INTO t VALUES (1)")
        with db.checkpoints_after(), db.write() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
        assert made == []
    assert made == [db.checkpoint_every]
    with db.checkpoints_after(), db.write() as tx:  # nothing due: nothing made
        tx.execute("INSERT INTO t VALUES (1)")
    assert made == [db.checkpoint_every]


@pytest.mark.parametrize("serves_requests", [False, True])
def test_commits_checkpoint_every_so_many_and_the_wal_stays_small(
    tmp_path: Path, serves_requests: bool
) -> None:
    """With SQLite's own checkpoints off, ``write`` checkpoints every ``checkpoint_every``
    commits: a lone writer's WAL then starts again from its beginning, cut back to
    WAL_SIZE_LIMIT, instead of holding every commit (10 x 16 KB a commit here)."""
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    db.serves_requests = serves_requests
    conn = db.connection()
    conn.execute("CREATE TABLE blobs (data BLOB)")
    commits = 10 * db.checkpoint_every
    for _ in range(commits):
        with db.write() as tx:
            tx.execute("INSERT INTO blobs VALUES (zeroblob(16000))")
    assert db.wal_path().stat().st_size <= db_module.WAL_SIZE_LIMIT + db.checkpoint_every * 20_000
    assert db.wal_path().stat().st_size < commits * 16_000 / 2
    assert db.read("SELECT count(*) FROM blobs")[0][0] == commits


def test_job_ids_are_32_hex_digits_that_sort_by_creation_time() -> None:
    ids = [new_job_id(1_700_000_000.0 + step / 1000) for step in range(50)]
    assert all(len(job_id) == 32 and int(job_id, 16) >= 0 for job_id in ids)
    assert ids == sorted(ids)
    assert len(set(new_job_id(1_700_000_000.0) for _ in range(1000))) == 1000


def test_the_wal_is_bounded_and_checkpointed_to_nothing(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    conn = db.connection()
    assert conn.execute("PRAGMA journal_size_limit").fetchone()[0] > 0
    conn.execute("CREATE TABLE blobs (data BLOB)")
    for _ in range(50):
        with db.write() as tx:
            tx.execute("INSERT INTO blobs VALUES (zeroblob(100000))")
    assert db.checkpoint()[0] == 0
    assert db.wal_path().stat().st_size == 0


def _grow_wal(db: SqliteDatabase, commits: int) -> None:
    """``commits`` write transactions of 16 KB each, the passive checkpoints of ``write`` leaving
    the WAL as it is: as they do when writers never leave it alone (each finds frames behind it)."""
    db._checkpoint_passive = lambda conn: None  # type: ignore[method-assign]
    conn = db.connection()
    conn.execute("CREATE TABLE IF NOT EXISTS blobs (data BLOB)")
    for _ in range(commits):
        with db.write() as tx:
            tx.execute("INSERT INTO blobs VALUES (zeroblob(16000))")


def test_a_wal_that_is_never_checkpointed_is_truncated_once_past_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spooler's or a mule's commits look at the WAL every WAL_CHECK_EVERY commits and force
    a TRUNCATE checkpoint once it is past WAL_RESTART_BYTES; a worker's never do."""
    monkeypatch.setattr(db_module, "WAL_RESTART_BYTES", 512 * 1024)
    db = SqliteDatabase(tmp_path / "job.sqlite3")
    _grow_wal(db, 4 * db_module.WAL_CHECK_EVERY)  # 4 MB written
    assert db.wal_path().stat().st_size <= 512 * 1024 + db_module.WAL_CHECK_EVERY * 20_000
    assert db.read("SELECT count(*) FROM blobs")[0][0] == 4 * db_module.WAL_CHECK_EVERY

    worker = SqliteDatabase(tmp_path / "worker.sqlite3")
    worker.serves_requests = True
    _grow_wal(worker, 4 * db_module.WAL_CHECK_EVERY)
    assert worker.wal_path().stat().st_size > 4 * db_module.WAL_CHECK_EVERY * 16_000


def test_a_reader_holding_the_wal_only_delays_its_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The forced checkpoint waits WAL_RESTART_WAIT_MS for a reader, then gives up with a log
    line and leaves the commits as they are; the next look after the reader has gone truncates."""
    monkeypatch.setattr(db_module, "WAL_RESTART_BYTES", 512 * 1024)
    monkeypatch.setattr(db_module, "WAL_RESTART_WAIT_MS", 20)
    db = SqliteDatabase(tmp_path / "db.sqlite3")
    _grow_wal(db, 1)
    reader = sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM blobs").fetchone()  # holds its snapshot of the WAL
        _grow_wal(db, 2 * db_module.WAL_CHECK_EVERY)
        assert "was not truncated" in caplog.text
        assert db.wal_path().stat().st_size > 2 * db_module.WAL_CHECK_EVERY * 16_000
        reader.execute("COMMIT")
    finally:
        reader.close()
    _grow_wal(db, db_module.WAL_CHECK_EVERY)
    assert db.wal_path().stat().st_size <= db_module.WAL_CHECK_EVERY * 20_000
    assert db.read("SELECT count(*) FROM blobs")[0][0] == 1 + 3 * db_module.WAL_CHECK_EVERY


def _error(message: str, code: int) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("raised", "status"),
    [
        (_error("database is locked", sqlite3.SQLITE_BUSY), 503),
        (_error("database or disk is full", sqlite3.SQLITE_FULL), 503),
        (_error("disk I/O error", sqlite3.SQLITE_IOERR | (3 << 8)), 503),
        (_error("no such column: nope", sqlite3.SQLITE_ERROR), 500),
    ],
)
def test_only_a_busy_database_or_a_full_disk_asks_to_try_again(
    app: Flask, raised: sqlite3.OperationalError, status: int
) -> None:
    def fails() -> str:
        raise raised

    app.add_url_rule("/fails", view_func=fails)
    answer = app.test_client().get("/fails")
    assert answer.status_code == status
    body = answer.get_json()
    assert body["error"] == ("database_unavailable" if status == 503 else "internal_error")
    assert ("Retry-After" in answer.headers) == (status == 503)


def test_readiness_reports_a_disk_below_the_free_space_floor(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.web import health

    assert app.test_client().get("/readyz").status_code == 200
    monkeypatch.setattr(health, "MIN_FREE_BYTES", 1 << 62)
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 503
    assert {"data_dir", "spool_dir"} <= answer.get_json()["problems"].keys()


class FakeSpooler:
    """uwsgi.spool as far as the spooler backend uses it: writes a file, or refuses."""

    def __init__(self, directory: Path, refuse: bool = False) -> None:
        self.directory = directory
        self.refuse = refuse

    def spool(self, message: dict[bytes, bytes]) -> bytes:
        if self.refuse:
            raise ValueError("unable to spool job")
        path = self.directory / f"uwsgi_spoolfile_{message[b'job'].decode()}"
        path.write_bytes(b"")
        return bytes(path)


def full_disk(*args: object, **kwargs: object) -> None:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = sqlite3.SQLITE_FULL
    raise exc


def test_a_spooled_job_whose_path_cannot_be_recorded_is_still_accepted(
    jobs: Jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(jobs.backends, "spooler", SpoolerBackend(FakeSpooler(tmp_path), tmp_path, jobs.store))  # type: ignore[arg-type]
    monkeypatch.setattr(jobs.store, "set_handle", full_disk)
    job = jobs.enqueue("diag.noop", backend="spooler")
    assert (jobs.get(job.id).status, jobs.get(job.id).handle) == ("queued", None)
    spool_file = tmp_path / f"uwsgi_spoolfile_{job.id}"
    assert spool_file.exists()
    # The spooler names the file it runs: the record learns it then.
    assert jobs.runner.run(job.id, allow_rerun=True, handle=str(spool_file)).status == "succeeded"
    assert jobs.get(job.id).handle == str(spool_file)


def test_a_job_the_spooler_refuses_is_failed_and_the_caller_told(jobs: Jobs, tmp_path: Path) -> None:
    jobs.backends["spooler"] = SpoolerBackend(FakeSpooler(tmp_path, refuse=True), tmp_path, jobs.store)  # type: ignore[arg-type]
    with pytest.raises(JobError):
        jobs.enqueue("diag.noop", backend="spooler")
    [failed] = jobs.store.list(task="diag.noop")
    assert failed.status == "failed" and "unable to spool" in (failed.error or {})["message"]


def test_an_outcome_the_database_refused_is_recorded_later_not_failed_as_lost(
    jobs: Jobs, make_job: MakeJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = make_job(task="diag.pid")
    succeed = jobs.store.succeed
    monkeypatch.setattr(jobs.store, "succeed", full_disk)
    with pytest.raises(OutcomeNotRecorded):
        jobs.runner.run(job.id, allow_rerun=True)
    assert jobs.get(job.id).status == "running"
    monkeypatch.setattr(jobs.store, "succeed", succeed)
    # The spool file comes up again in the same spooler: the kept result is written, not rerun.
    assert jobs.runner.run(job.id, allow_rerun=True).status == "succeeded"
    done = jobs.get(job.id)
    assert (done.status, done.attempts, done.error) == ("succeeded", 1, None)


def test_an_outcome_kept_by_one_spooler_is_written_at_its_next_file_not_left_to_chance(
    jobs: Jobs, make_job: MakeJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spooler A runs a job while the disk is full and keeps its result; the job's file then goes
    to spooler B, which finds it running in A (alive) and puts it off for a second only; A writes
    the result when it handles its next file, whichever, and B's next try finds the job done."""
    first, second = make_job(task="diag.pid"), make_job()
    files = {job.id: tmp_path / f"uwsgi_spoolfile_{job.id}" for job in (first, second)}
    for file in files.values():
        file.write_bytes(b"")

    def message(job_id: str) -> dict[object, bytes]:
        return {b"job": job_id.encode(), "spooler_task_name": files[job_id].name.encode()}

    spooler = SpoolerBackend(Harakiri(), tmp_path, jobs.store)  # type: ignore[arg-type]
    sibling = Runner(jobs.runner.app, jobs.store, jobs.registry)
    here = owner.here
    a = here(os.getppid())  # spooler A: another live process of this run
    succeed = jobs.store.succeed
    monkeypatch.setattr(jobs.store, "succeed", full_disk)
    monkeypatch.setattr(owner, "here", lambda pid=None: a if pid is None else here(pid))
    assert spooler.handle(jobs.runner, message(first.id)) == SPOOL_RETRY
    monkeypatch.setattr(jobs.store, "succeed", succeed)
    monkeypatch.setattr(owner, "here", here)  # spooler B, this process, with nothing kept

    assert spooler.handle(sibling, message(first.id)) == SPOOL_RETRY
    assert jobs.get(first.id).status == "running"
    assert files[first.id].stat().st_mtime <= time.time() + 2  # a second, not RETRY_AFTER_INTERNAL_ERROR

    monkeypatch.setattr(owner, "here", lambda pid=None: a if pid is None else here(pid))
    assert spooler.handle(jobs.runner, message(second.id)) == SPOOL_OK
    assert (jobs.get(first.id).status, jobs.get(first.id).attempts) == ("succeeded", 1)
    monkeypatch.setattr(owner, "here", here)
    assert spooler.handle(sibling, message(first.id)) == SPOOL_OK  # done: the file goes, not rerun
    assert jobs.get(first.id).attempts == 1


class Harakiri:
    """uwsgi as far as a spooler running jobs uses it: the per-job timeout guard."""

    @staticmethod
    def set_user_harakiri(seconds: int) -> None:
        pass


def test_a_batch_file_records_each_success_with_the_next_jobs_claim(
    jobs: Jobs, make_job: MakeJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three jobs of one batch file: three claims and the last success, four write transactions
    where a job alone takes two; every record ends as it would alone."""
    batch = [make_job() for _ in range(3)]
    spooler = SpoolerBackend(Harakiri(), tmp_path, jobs.store)  # type: ignore[arg-type]
    writes = 0
    write = jobs.store.db.write

    def counted() -> object:
        nonlocal writes
        writes += 1
        return write()

    monkeypatch.setattr(jobs.store.db, "write", counted)
    message = {b"jobs": ",".join(job.id for job in batch).encode(), "spooler_task_name": b"batch"}
    assert spooler.handle(jobs.runner, message) == SPOOL_OK
    assert writes == 4
    for job in batch:
        done = jobs.get(job.id)
        assert (done.status, done.attempts, done.error) == ("succeeded", 1, None)
        assert done.finished_at is not None and done.started_at is not None
        assert done.started_at <= done.finished_at


def test_a_batch_success_the_database_refused_is_recorded_when_the_file_runs_again(
    jobs: Jobs, make_job: MakeJob, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim carrying the first job's success fails (a full disk): the file is kept, and
    when it runs again the first job's success is written, not the job run a second time."""
    first, second = make_job(), make_job()
    spooler = SpoolerBackend(Harakiri(), tmp_path, jobs.store)  # type: ignore[arg-type]
    claim = jobs.store.claim

    def refused_with_a_success(job_id: str, **kwargs: object) -> object:
        if kwargs.get("succeeded") is not None:
            full_disk()
        return claim(job_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jobs.store, "claim", refused_with_a_success)
    message = {b"jobs": f"{first.id},{second.id}".encode(), "spooler_task_name": b"batch"}
    assert spooler.handle(jobs.runner, message) == SPOOL_RETRY
    assert (jobs.get(first.id).status, jobs.get(second.id).status) == ("running", "queued")
    monkeypatch.setattr(jobs.store, "claim", claim)
    assert spooler.handle(jobs.runner, message) == SPOOL_OK
    for job in (first, second):
        done = jobs.get(job.id)
        assert (done.status, done.attempts) == ("succeeded", 1)


@pytest.mark.sqlite_only("PostgreSQL manages its own WAL: its checkpoint() is a no-op")
def test_the_purge_job_gives_the_wal_back_to_the_disk(app: Flask, jobs: Jobs) -> None:
    assert isinstance(jobs.db, SqliteDatabase)
    for _ in range(20):
        jobs.enqueue("diag.noop")
    assert jobs.db.wal_path().stat().st_size > 0
    with app.app_context():
        result = purge()
    assert result == {"purged": 0, "wal_checkpoint_blocked": 0}
    assert jobs.db.wal_path().stat().st_size == 0


@pytest.mark.sqlite_only("reads sqlite_master; migration 3 dropped the table on both")
def test_the_job_store_keeps_no_page_views_which_are_the_examples(jobs: Jobs) -> None:
    tables = {row[0] for row in jobs.db.read("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "counters" not in tables and "jobs" in tables
    assert not hasattr(jobs.store, "increment")


def test_the_spooler_function_wakes_its_own_scan_after_every_file_even_one_without_a_job(
    jobs: Jobs, make_job: MakeJob, tmp_path: Path
) -> None:
    """uWSGI signals only an idle spooler when a file is written: a file written while it ran a
    job, behind its readdir pass, would wait for the next periodic scan (a second). After every
    file the spooler function sends its own process uWSGI's wake-up (SIGUSR1), so another pass
    follows; here it is caught instead of reaching uWSGI's handler."""
    woken: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: woken.append(signum))
    try:
        spooler = SpoolerBackend(Harakiri(), tmp_path, jobs.store)  # type: ignore[arg-type]
        job = make_job()
        file = tmp_path / f"uwsgi_spoolfile_{job.id}"
        file.write_bytes(b"")
        message = {b"job": job.id.encode(), "spooler_task_name": file.name.encode()}
        assert spooler.spooler_function(jobs.runner, message) == SPOOL_OK
        assert woken == [signal.SIGUSR1]
        # A file with no job in it is dropped, and the scan woken all the same.
        assert spooler.spooler_function(jobs.runner, {"spooler_task_name": b"junk"}) == SPOOL_OK
        assert woken == [signal.SIGUSR1] * 2
    finally:
        signal.signal(signal.SIGUSR1, previous)
