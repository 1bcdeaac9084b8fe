"""Jobs at the edges, on the real stack: a disk that fills up, a spooler killed under load, a
worker killed while it holds jobs back for a shared spool file."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import IN_CI, Stack, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]
FINISHED = ("succeeded", "failed", "cancelled")
LEAVE = 128 * 1024


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 4 MB tmpfs, unmounted afterwards; needs root (CAP_SYS_ADMIN)."""
    mount_point = Path(tempfile.mkdtemp(prefix="fus-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        mount_point.rmdir()
        reason = f"cannot mount a tmpfs: {mounted.stderr.strip() or mounted.returncode}"
        if IN_CI:
            pytest.fail(f"{reason}, and CI=true requires it")
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)
        shutil.rmtree(mount_point, ignore_errors=True)


def fill(disk: Path, leave: int) -> Path:
    """Write a file until the disk is full, then give back ``leave`` bytes; returns the file."""
    filler = disk / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        out.truncate(max(0, out.tell() - leave))
    return filler


def size_job(stack: Stack, marker: str) -> tuple[int, str]:
    """Enqueue fixture.size with a recognisable argument; (status code, error code or job id)."""
    answer = stack.post("/api/jobs", json={"task": "fixture.size", "args": {"blob": marker}})
    body = answer.json()
    return answer.status_code, body["id"] if answer.status_code == 202 else body["error"]


def records_by_marker(stack: Stack) -> dict[str, dict[str, object]]:
    jobs = stack.get("/api/jobs?task=fixture.size&limit=500").json()["jobs"]
    return {job["args"]["blob"]: job for job in jobs}


def test_a_full_disk_gives_answers_that_agree_with_the_records_and_recovers(
    small_disk: Path, make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    stack = make_stack(DATA_DIR=str(small_disk / "data"), SPOOL_DIR=str(small_disk / "spool"), PROCESSES="2")
    assert stack.get("/readyz").status_code == 200
    # Room for a few jobs' records and files, not for all: some enqueues fail midway.
    filler = fill(small_disk, leave=LEAVE)
    full = stack.get("/readyz")
    assert full.status_code == 503, full.text

    answers = {f"full-{n}": size_job(stack, f"full-{n}") for n in range(40)}
    accepted = {marker for marker, (code, _) in answers.items() if code == 202}
    refused = {marker for marker, (code, _) in answers.items() if code == 503}
    assert accepted | refused == set(answers), answers
    assert stack.get("/readyz").status_code == 503

    filler.unlink()
    wait_until(lambda: stack.get("/readyz").status_code == 200, timeout=30, what="/readyz to be ready")
    after = {f"after-{n}": size_job(stack, f"after-{n}") for n in range(100)}
    assert {code for code, _ in after.values()} == {202}, after

    def accepted_jobs_finished() -> bool:
        records = records_by_marker(stack)
        return all(records.get(m, {}).get("status") in FINISHED for m in accepted | set(after))

    wait_until(accepted_jobs_finished, timeout=60, interval=0.5, what="every accepted job to finish")
    records = records_by_marker(stack)
    for marker in accepted | set(after):
        assert records[marker]["status"] == "succeeded", records[marker]
    ran_though_refused = [m for m in refused if records.get(m, {}).get("status") not in (None, "failed")]
    assert ran_though_refused == [], {m: records[m] for m in ran_though_refused}
    wal = Path(stack.env["DATA_DIR"]) / "app.sqlite3-wal"
    wal_size = wal.stat().st_size if wal.exists() else 0
    assert wal_size <= 2 * 1024 * 1024, f"the WAL holds {wal_size} bytes"
    figure(
        f"disk full: {len(accepted)} accepted (all succeeded), {len(refused)} refused with 503"
        f" ({sum(1 for m in refused if m in records)} recorded as failed, none ran);"
        f" freed: 100/100 accepted and succeeded; WAL {wal_size} bytes"
    )


def test_every_job_succeeds_though_a_spooler_is_killed_under_load(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    stack = make_stack(PROCESSES="2", SPOOLER_PROCESSES="2")
    count = 300
    kills: list[int] = []
    enqueued = threading.Event()

    def kill_spoolers() -> None:
        # One spooler at a time, while jobs are still flowing in and being run.
        while not enqueued.is_set() or len(kills) < 2:
            spoolers = [s["pid"] for s in stack.stats()["spoolers"] if s["pid"] > 0 and s["pid"] not in kills]
            if spoolers and len(kills) < 3:
                os.kill(spoolers[0], signal.SIGKILL)
                kills.append(spoolers[0])
            time.sleep(0.3)
            if len(kills) >= 3:
                return

    def enqueue(_: int) -> str:
        return stack.enqueue("diag.sleep", {"seconds": 0.01}, max_attempts=3)["id"]

    started = time.monotonic()
    killer = threading.Thread(target=kill_spoolers)
    killer.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(enqueue, range(count)))
    finally:
        enqueued.set()
        killer.join(timeout=30)

    def all_succeeded() -> bool:
        page = stack.get("/api/jobs?task=diag.sleep&status=succeeded&limit=500").json()["jobs"]
        return len(page) == count

    wait_until(all_succeeded, timeout=120, interval=0.5, what=f"{count} jobs to succeed")
    elapsed = time.monotonic() - started
    assert len(set(ids)) == count and len(kills) >= 2
    done = stack.get("/api/jobs?task=diag.sleep&status=succeeded&limit=500").json()["jobs"]
    rerun = sum(1 for job in done if job["attempts"] > 1)
    figure(
        f"{len(done)}/{count} jobs succeeded in {elapsed:.1f} s, {len(kills)} spoolers killed (-9),"
        f" {rerun} jobs rerun after a lost attempt"
    )


def test_jobs_held_back_by_a_worker_killed_mid_request_are_spooled_by_the_reaper(
    make_stack: Callable[..., Stack], figure: Callable[[str], None]
) -> None:
    stack = make_stack(PROCESSES="1", SPOOLER_PROCESSES="2")
    database = stack.root / "data" / "app.sqlite3"
    outbox = stack.root / "spool" / ".outbox"

    def recorded() -> int:
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn:
            return int(conn.execute("SELECT count(*) FROM jobs WHERE task = 'diag.pid'").fetchone()[0])

    def recorded_at_least(count: int) -> Callable[[], bool]:
        return lambda: recorded() >= count

    held: list[str] = []
    for _ in range(3):  # until a kill lands while jobs are held (nearly always the first)
        worker = stack.stats()["workers"][0]["pid"]
        before = recorded()
        request = threading.Thread(
            target=stack.post, args=("/api/diag/enqueue?count=5000&task=diag.pid&backend=spooler",)
        )
        request.start()
        wait_until(recorded_at_least(before + 200), timeout=30, what="the request to enqueue 200 jobs")
        os.kill(worker, signal.SIGKILL)
        request.join(timeout=30)
        for journal in outbox.glob(f"*-{worker}"):
            held += journal.read_text().split()
        if held:
            break
    assert held, "no kill landed while jobs were held back"
    total = recorded()
    killed_at = time.monotonic()

    def all_succeeded() -> bool:
        with contextlib.closing(sqlite3.connect(database, timeout=10)) as conn:
            done = conn.execute(
                "SELECT count(*) FROM jobs WHERE task = 'diag.pid' AND status = 'succeeded'"
            ).fetchone()[0]
        return int(done) == total

    # The reaper runs every 15 s on each node.
    wait_until(all_succeeded, timeout=60, interval=0.5, what=f"all {total} recorded jobs to succeed")
    assert "held by a process that died before spooling them: spooled now" in stack.logs()
    assert not list(outbox.glob(f"*-{worker}")), "the dead worker's journal is left"
    figure(
        f"worker killed (-9) mid-request with {len(held)} jobs held back: all {total} recorded jobs"
        f" succeeded, the last {time.monotonic() - killed_at:.1f} s after the kill"
    )
