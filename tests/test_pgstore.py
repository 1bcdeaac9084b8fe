"""The job store on PostgreSQL (DATABASE_URL): migrations that reach an existing database on
both databases and run once when replicas start together, errors that pass answered 503 not 500,
a launcher that names an unreachable database, and secrets read from files, never printed."""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask

from app.db import PostgresDatabase, SqliteDatabase, is_busy, is_transient, open_database, postgres_ddl
from app.jobs import Jobs, current_jobs
from app.jobs.schema import MIGRATIONS
from app.settings import PROJECT_ROOT, Settings, SettingsError
from tests.conftest import AppFactory, Stack, free_port, wait_until
from tests.postgres import PASSWORD, PostgresServer

pytestmark = pytest.mark.both_databases


def schema_version(url: str, path: Path) -> int:
    db = open_database(url, path)
    if url:
        return int(db.read("SELECT version FROM schema_version")[0][0])
    return int(db.read("PRAGMA user_version")[0][0])


def test_a_database_at_the_previous_schema_is_migrated_and_keeps_its_jobs(
    app_factory: AppFactory, database: str, state_dir: Path
) -> None:
    path = state_dir / "data" / "app.sqlite3"
    path.parent.mkdir(parents=True)
    old = open_database(database, path, MIGRATIONS[:-1])
    assert old.migrate() == len(MIGRATIONS) - 1
    with old.write() as tx:
        tx.execute(
            "INSERT INTO jobs (id, task, args, backend, status, max_attempts, handle, created_at,"
            " updated_at) VALUES ('j1', 'diag.noop', '{}', 'spooler', 'failed', 1, '/spool/f', ?, ?)",
            (1_700_000_000.125, 1_700_000_000.125),
        )
    app = app_factory()
    assert schema_version(database, path) == len(MIGRATIONS)
    with app.app_context():
        job = current_jobs().get("j1")
    # A time keeps its milliseconds: REAL is a double on PostgreSQL too, not a float4.
    assert (job.status, job.handle, job.created_at) == ("failed", "/spool/f", 1_700_000_000.125)


def test_migration_types_are_translated_by_word_not_per_migration() -> None:
    statement = (
        "CREATE TABLE nodes (name TEXT, seen_at REAL NOT NULL, beats INTEGER, real_time TEXT, data BLOB)"
    )
    assert postgres_ddl(statement) == (
        "CREATE TABLE nodes (name TEXT, seen_at DOUBLE PRECISION NOT NULL, beats BIGINT,"
        " real_time TEXT, data BYTEA)"
    )


def _migrate(url: str, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=30)
    try:
        results.put(PostgresDatabase(url, MIGRATIONS).migrate())
    except Exception as exc:
        results.put(repr(exc))


def test_replicas_migrating_one_empty_database_at_once_run_each_migration_once(postgres_url: str) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    results = context.Queue()
    children = [context.Process(target=_migrate, args=(postgres_url, barrier, results)) for _ in range(4)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
    # A migration run twice would fail: migration 2 renames a column that is then gone.
    assert outcomes == [len(MIGRATIONS)] * 4
    assert schema_version(postgres_url, Path("/nonexistent")) == len(MIGRATIONS)


def terminate_and_refuse(server: PostgresServer, url: str) -> None:
    """Cut the database off: its sessions ended by an administrator, new ones refused."""
    name = url.rsplit("/", 1)[1]
    with server.admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def let_in(server: PostgresServer, url: str) -> None:
    with server.admin() as conn:
        conn.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" ALLOW_CONNECTIONS true')


def test_a_database_cut_off_answers_503_and_the_store_reconnects_once_it_is_back(
    postgres: PostgresServer, postgres_url: str, app_factory: AppFactory
) -> None:
    app = app_factory(DATABASE_URL=postgres_url)
    client = app.test_client()
    assert client.get("/api/jobs").status_code == 200
    terminate_and_refuse(postgres, postgres_url)
    for _ in range(2):  # the broken connection, then a refused reconnection
        answer = client.get("/api/jobs")
        assert answer.status_code == 503, answer.get_data(as_text=True)
        assert answer.get_json()["error"] == "database_unavailable"
        assert answer.headers["Retry-After"] == "10"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "127.0.0.1" in ready.get_json()["problems"]["database"]
    assert PASSWORD not in ready.get_data(as_text=True)
    let_in(postgres, postgres_url)
    assert client.get("/api/jobs").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_postgres_errors_are_judged_by_their_sqlstate() -> None:
    assert is_busy(psycopg.errors.SerializationFailure()) and is_transient(psycopg.errors.DeadlockDetected())
    assert is_busy(psycopg.errors.LockNotAvailable())
    assert is_transient(psycopg.errors.AdminShutdown()) and not is_busy(psycopg.errors.AdminShutdown())
    assert is_transient(psycopg.errors.TooManyConnections())
    assert is_transient(psycopg.OperationalError("connection failed"))
    assert not is_transient(psycopg.errors.UndefinedColumn())
    assert not is_transient(psycopg.errors.UniqueViolation())


def test_two_claims_of_one_job_on_postgres_start_one_attempt(jobs: Jobs, database: str) -> None:
    """FOR UPDATE: a second claim waits for the first and then sees the job running."""
    job = jobs.store.create(
        task="diag.noop", args_json="{}", backend="thread", max_attempts=3, timeout=None,
        run_at=None, request_id=None,
    )  # fmt: skip
    assert job is not None
    db = jobs.store.db
    with db.write() as tx:
        tx.execute(f"SELECT * FROM jobs WHERE id = ?{db.for_update}", (job.id,))
        if database:
            # Another connection's claim waits on the row lock, and gets the job once it is free.
            other = PostgresDatabase(database)
            conn = other.connect()
            conn.execute("SET lock_timeout = 200")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                conn.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job.id,))
            conn.close()
    first = jobs.store.claim(job.id, allow_rerun=False)
    second = jobs.store.claim(job.id, allow_rerun=False)
    assert (first.verdict, second.verdict) == ("run", "skip")
    assert jobs.get(job.id).attempts == 1


# Secrets: NAME_FILE (Docker secrets), and never printed.


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret\n")
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "OPERATOR_TOKEN_FILE": str(tmp_path / "token")})
    assert settings.operator_token == "s3cret"


def test_a_secret_and_its_file_both_set_are_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("x")
    env = {
        "DATA_DIR": str(tmp_path),
        "DATABASE_PASSWORD": "y",
        "DATABASE_PASSWORD_FILE": str(tmp_path / "pw"),
    }
    with pytest.raises(SettingsError, match=r"^DATABASE_PASSWORD and DATABASE_PASSWORD_FILE are both set"):
        Settings.from_env(env)


def test_an_unreadable_secret_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(
        SettingsError, match=r"^DATABASE_URL_FILE: cannot read '/nonexistent/url': No such file"
    ):
        Settings.from_env({"DATA_DIR": str(tmp_path), "DATABASE_URL_FILE": "/nonexistent/url"})


def test_only_a_postgresql_url_is_taken_and_its_password_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"DATA_DIR": str(tmp_path), "DATABASE_URL": "mysql://u:hunter2@db/x"})
    assert str(refused.value).startswith("DATABASE_URL: expected a postgresql:// URL")
    assert "hunter2" not in str(refused.value)


def test_the_check_command_masks_every_secret(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "d"),
        "SPOOL_DIR": str(tmp_path / "s"),
        "RUN_DIR": str(tmp_path / "r"),
        "DATABASE_URL": "postgresql://app:hunter2@db.example:5433/jobs",
        "DATABASE_PASSWORD": "hunter3",
        "OPERATOR_TOKEN": "hunter4",
    }
    shown = subprocess.run(
        [sys.executable, "-m", "app.serve", "check"], cwd=PROJECT_ROOT, env=env,
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "DATABASE_URL=postgresql://app:***@db.example:5433/jobs" in shown.splitlines()
    assert "DATABASE_PASSWORD=***" in shown.splitlines() and "OPERATOR_TOKEN=***" in shown.splitlines()
    assert "hunter" not in shown


def test_the_password_setting_replaces_the_urls(
    postgres: PostgresServer, postgres_url: str, tmp_path: Path
) -> None:
    without = postgres_url.replace(f":{PASSWORD}@", "@")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path), "DATABASE_URL": without, "DATABASE_PASSWORD_FILE": str(tmp_path / "pw")}
    )
    db = open_database(settings.database_url, settings.database_path, password=settings.database_password)
    assert db.read("SELECT 1")[0][0] == 1
    wrong = PostgresDatabase(postgres_url, password="wrong")
    with pytest.raises(psycopg.OperationalError) as refused:
        wrong.read("SELECT 1")
    assert is_transient(refused.value)


def test_the_launcher_names_an_unreachable_database_and_not_its_password(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "d"),
        "SPOOL_DIR": str(tmp_path / "s"),
        "RUN_DIR": str(tmp_path / "r"),
        "DATABASE_URL": f"postgresql://app:hunter2@127.0.0.1:{port}/jobs",
        "DATABASE_WAIT": "0",
    }
    ran = subprocess.run(
        [sys.executable, "-m", "app.serve", "uwsgi"], cwd=PROJECT_ROOT, env=env,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert ran.returncode == 5
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"database error: DATABASE_URL: cannot connect to 127.0.0.1:{port}/jobs: "
    ), lines
    assert "hunter2" not in ran.stderr


@pytest.mark.integration
def test_the_stack_runs_spooler_jobs_on_postgres_and_answers_503_when_it_is_cut_off(
    make_stack: Any, postgres: PostgresServer, postgres_url: str
) -> None:
    stack: Stack = make_stack(
        DATABASE_URL=postgres_url.replace(f":{PASSWORD}@", "@"), DATABASE_PASSWORD=PASSWORD
    )
    job = stack.enqueue("diag.noop")
    assert job["backend"] == "spooler"
    assert stack.wait_for_job(job["id"], ("succeeded", "failed"))["status"] == "succeeded"
    assert stack.get("/readyz").status_code == 200
    assert not (stack.root / "data" / "app.sqlite3").exists()
    terminate_and_refuse(postgres, postgres_url)
    answer = stack.get("/api/jobs")
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "database_unavailable"
    assert stack.get("/readyz").status_code == 503
    let_in(postgres, postgres_url)
    wait_until(lambda: stack.get("/api/jobs").status_code == 200, timeout=30, what="the API to recover")
    assert PASSWORD not in stack.logs()


def test_sqlite_stays_the_default(app: Flask, jobs: Jobs, database: str) -> None:
    assert isinstance(jobs.db, SqliteDatabase if not database else PostgresDatabase)


def launch_against(url: str, tmp_path: Path, wait: int) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "d"),
        "SPOOL_DIR": str(tmp_path / "s"),
        "RUN_DIR": str(tmp_path / "r"),
        "DATABASE_URL": url,
        "DATABASE_WAIT": str(wait),
    }
    started = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-m", "app.serve", "uwsgi"], cwd=PROJECT_ROOT, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return ran, time.monotonic() - started


def test_the_launcher_waits_database_wait_seconds_for_a_database_that_does_not_answer(tmp_path: Path) -> None:
    ran, took = launch_against(f"postgresql://app@127.0.0.1:{free_port()}/jobs", tmp_path, wait=3)
    assert ran.returncode == 5
    lines = ran.stderr.strip().splitlines()
    assert lines[0].startswith("waiting up to 3 s for the database at 127.0.0.1:"), lines
    assert lines[-1].startswith("database error: DATABASE_URL: cannot connect to"), lines
    assert took >= 3


def test_the_launcher_refuses_a_rejected_login_at_once(postgres_url: str, tmp_path: Path) -> None:
    wrong = re.sub(r"://([^:@/]+)(:[^@/]*)?@", r"://\1:not-the-password@", postgres_url)
    ran, took = launch_against(wrong, tmp_path, wait=30)
    assert ran.returncode == 5
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and "password authentication failed" in lines[0], lines
    assert "not-the-password" not in ran.stderr
    assert took < 30
