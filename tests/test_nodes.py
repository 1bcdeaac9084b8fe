"""Nodes sharing one job store: heartbeats, liveness across nodes, and the adoption of a dead
node's jobs by the claim and the reaper.

Two nodes here are two NODE_NAMEs over one database; a dead node is one whose heartbeat row
is older than NODE_TIMEOUT."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.jobs import Jobs
from app.jobs import owner as owners
from app.jobs.heartbeat import Heartbeat
from app.jobs.maintenance import reap
from app.jobs.owner import Owner
from app.jobs.periodic import Schedule
from app.jobs.store import Job, Verdict
from tests.conftest import AppFactory, MakeJob, query_plan, use_real_backends, wait_until

pytestmark = pytest.mark.both_databases

TIMEOUT = 30
DEAD = "node-dead"
LIVE = "node-live"


class FakeUwsgi:
    """What the spooler backend asks of uWSGI: ``spool`` writes a file and keeps the message."""

    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.spooled: list[dict[bytes, bytes]] = []

    def spool(self, message: dict[bytes, bytes]) -> bytes:
        self.spooled.append(message)
        path = self.spool_dir / f"uwsgi_spoolfile_on_test_{len(self.spooled)}"
        path.write_bytes(b"")
        if b"at" in message:
            os.utime(path, (int(message[b"at"]), int(message[b"at"])))
        return os.fsencode(path)

    def spooled_ids(self) -> list[str]:
        return [i for m in self.spooled for i in (m.get(b"job") or m[b"jobs"]).decode().split(",")]


@pytest.fixture(autouse=True)
def fresh_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats read afresh by every check: the tests write them and look at once."""
    monkeypatch.setattr(owners, "BEATS_CACHE_SECONDS", 0.0)


@pytest.fixture
def app(app_factory: AppFactory) -> Flask:
    return app_factory(NODE_NAME="node-here", NODE_TIMEOUT=str(TIMEOUT))


@pytest.fixture
def uwsgi(tmp_path: Path) -> FakeUwsgi:
    return FakeUwsgi(tmp_path)


@pytest.fixture
def jobs(jobs: Jobs, uwsgi: FakeUwsgi, tmp_path: Path) -> Jobs:
    """The app's job layer with the real backends' judgement and a spooler writing files here."""
    return use_real_backends(jobs, uwsgi, tmp_path)


def beat(jobs: Jobs, node: str, run: str = "1.1700000000", age: float = 0.0) -> None:
    """A heartbeat of ``node``'s run ``run``, ``age`` seconds ago."""
    with jobs.db.write() as tx:
        tx.execute(
            "INSERT INTO nodes (node, run, host, pid, started_at, beat_at) VALUES (?, ?, 'h', 1, 0, ?)"
            " ON CONFLICT (node, run) DO UPDATE SET beat_at = excluded.beat_at",
            (node, run, time.time() - age),
        )


def held_by(jobs: Jobs, job: Job, node: str, *, running: bool = False, handle: str | None = None) -> Job:
    """The job as node ``node`` left it: handed over there, or running there (one attempt)."""
    holder = Owner(node, "1.1700000000", 4242)
    with jobs.db.write() as tx:
        if running:
            tx.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, owner = ?, pid = ?,"
                " node = ?, handle = ? WHERE id = ?",
                (str(holder), holder.pid, node, handle, job.id),
            )
        else:
            tx.execute("UPDATE jobs SET node = ?, handle = ? WHERE id = ?", (node, handle, job.id))
    return jobs.get(job.id)


def with_dead_and_live_nodes(jobs: Jobs) -> None:
    beat(jobs, DEAD, age=TIMEOUT + 5)
    beat(jobs, LIVE)


def test_a_new_job_is_held_by_the_node_that_created_it(jobs: Jobs, make_job: MakeJob) -> None:
    assert make_job().node == "node-here" == jobs.get(make_job().id).node
    assert jobs.get(make_job().id).to_dict()["node"] == "node-here", "the API shows it"


def test_an_owner_on_another_node_is_alive_while_its_run_beats(jobs: Jobs) -> None:
    run = "7.1700000000"
    beat(jobs, LIVE, run)
    beat(jobs, DEAD, run, age=TIMEOUT + 1)
    assert owners.alive(Owner(LIVE, run, 1))
    assert not owners.alive(Owner(DEAD, run, 1))
    assert not owners.alive(Owner("node-never-seen", run, 1))
    assert not owners.alive(Owner(LIVE, "8.1700000001", 1)), "another run of a live node"
    assert owners.node_alive(LIVE) and not owners.node_alive(DEAD) and owners.node_alive("node-here")
    assert owners.dead_nodes() == [DEAD]


def test_a_node_that_restarted_is_alive_by_its_new_run(jobs: Jobs) -> None:
    beat(jobs, DEAD, "1.old", age=TIMEOUT + 1)
    beat(jobs, DEAD, "2.new")
    assert owners.node_alive(DEAD) and owners.dead_nodes() == []


def test_heartbeats_are_read_at_most_once_a_second(jobs: Jobs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owners, "BEATS_CACHE_SECONDS", 1.0)
    reads: list[int] = []
    read = jobs.store.beats

    def counted() -> dict[tuple[str, str], float]:
        reads.append(1)
        return read()

    monkeypatch.setattr(owners._identity, "read_beats", counted)
    owners._identity.beats = None
    for _ in range(50):
        owners.node_alive(LIVE)
    assert len(reads) == 1


def test_the_claim_skips_a_stale_copy_of_a_job_another_live_node_adopted(
    jobs: Jobs, make_job: MakeJob
) -> None:
    with_dead_and_live_nodes(jobs)
    job = held_by(jobs, make_job(), LIVE)
    claim = jobs.store.claim(job.id, allow_rerun=True, handle="/spool/stale")
    assert claim.verdict is Verdict.SKIP
    assert jobs.get(job.id).status == "queued" and jobs.get(job.id).node == LIVE


@pytest.mark.parametrize("node", [DEAD, None])
def test_the_claim_adopts_a_job_of_a_dead_node_or_of_none_and_runs_it(
    jobs: Jobs, make_job: MakeJob, node: str | None
) -> None:
    with_dead_and_live_nodes(jobs)
    job = make_job()
    with jobs.db.write() as tx:
        tx.execute("UPDATE jobs SET node = ? WHERE id = ?", (node, job.id))
    claim = jobs.store.claim(job.id, allow_rerun=True)
    assert claim.verdict is Verdict.RUN and claim.job is not None
    assert claim.job.node == "node-here" and claim.job.attempts == 1


def test_the_claim_reruns_a_job_running_on_a_dead_node_counting_the_lost_attempt(
    jobs: Jobs, make_job: MakeJob
) -> None:
    with_dead_and_live_nodes(jobs)
    job = held_by(jobs, make_job(max_attempts=2), DEAD, running=True)
    claim = jobs.store.claim(job.id, allow_rerun=True)
    assert claim.verdict is Verdict.RUN and claim.job is not None
    assert claim.job.attempts == 2 and claim.job.node == "node-here"
    assert claim.job.error is not None and DEAD in claim.job.error["message"]


def test_the_reaper_spools_here_the_waiting_jobs_of_a_dead_node(
    app: Flask, jobs: Jobs, make_job: MakeJob, uwsgi: FakeUwsgi
) -> None:
    with_dead_and_live_nodes(jobs)
    due = held_by(jobs, make_job(), DEAD, handle="/elsewhere/uwsgi_spoolfile_on_dead")
    later = held_by(jobs, make_job(run_at=time.time() + 3600), DEAD)
    theirs = held_by(jobs, make_job(), LIVE)
    with app.app_context():
        assert reap()["adopted"] == 2
    assert sorted(uwsgi.spooled_ids()) == sorted([due.id, later.id])
    assert jobs.get(due.id).node == jobs.get(later.id).node == "node-here"
    assert jobs.get(due.id).status == "queued" and jobs.get(theirs.id).node == LIVE
    delayed = [m for m in uwsgi.spooled if m.get(b"job") == later.id.encode()]
    assert delayed and int(delayed[0][b"at"]) >= (later.run_at or 0), "the delay is kept"
    assert jobs.get(later.id).handle is not None and Path(jobs.get(later.id).handle or "").exists()
    with app.app_context():
        assert reap()["adopted"] == 0, "adopted once"


def test_the_reaper_reruns_here_a_spooler_job_running_on_a_dead_node(
    app: Flask, jobs: Jobs, make_job: MakeJob, uwsgi: FakeUwsgi
) -> None:
    with_dead_and_live_nodes(jobs)
    again = held_by(jobs, make_job(max_attempts=2), DEAD, running=True)
    spent = held_by(jobs, make_job(max_attempts=1), DEAD, running=True)
    with app.app_context():
        assert reap() == {"reaped": 1, "adopted": 1, "nodes_pruned": 0, "outbox_recovered": 0}
    rerun, failed = jobs.get(again.id), jobs.get(spent.id)
    assert rerun.status == "retrying" and rerun.node == "node-here" and rerun.attempts == 1
    assert rerun.error is not None and rerun.error["type"] == "WorkerLost" and DEAD in rerun.error["message"]
    assert failed.status == "failed" and failed.error is not None and DEAD in failed.error["message"]
    assert uwsgi.spooled_ids() == [again.id]
    claim = jobs.store.claim(again.id, allow_rerun=True)
    assert claim.verdict is Verdict.RUN and claim.job is not None and claim.job.attempts == 2


def test_of_two_reapers_racing_one_alone_adopts_each_job(jobs: Jobs, make_job: MakeJob) -> None:
    with_dead_and_live_nodes(jobs)
    waiting = held_by(jobs, make_job(), DEAD)
    running = held_by(jobs, make_job(max_attempts=3), DEAD, running=True)
    error = {"type": "WorkerLost", "message": "gone", "traceback": None}
    assert jobs.store.adopt([waiting.id], DEAD) == 1
    assert jobs.store.adopt([waiting.id], DEAD) == 0
    assert jobs.store.adopt_lost_attempt(running, error) == "retrying"
    assert jobs.store.adopt_lost_attempt(running, error) is None


@pytest.mark.parametrize("backend", ["mule", "thread"])
def test_mule_and_thread_jobs_of_a_dead_node_fail_naming_it(
    app: Flask, jobs: Jobs, make_job: MakeJob, backend: str
) -> None:
    with_dead_and_live_nodes(jobs)
    holder = str(Owner(DEAD, "1.1700000000", 4242))
    queued = held_by(jobs, make_job(backend=backend), DEAD, handle=holder)
    running = held_by(jobs, make_job(backend=backend), DEAD, running=True, handle=holder)
    live = held_by(jobs, make_job(backend=backend), LIVE, handle=str(Owner(LIVE, "1.1700000000", 1)))
    with app.app_context():
        assert reap()["reaped"] == 2
    for job in (queued, running):
        record = jobs.get(job.id)
        assert record.status == "failed" and record.error is not None
        assert record.error["type"] == "WorkerLost" and DEAD in record.error["message"]
    assert jobs.get(live.id).status == "queued"


@pytest.mark.sqlite_only("reads SQLite's query plan; PostgreSQL's depends on its statistics")
def test_a_dead_nodes_jobs_are_found_through_the_node_index(jobs: Jobs) -> None:
    for spooled in (True, False):
        plan = query_plan(jobs, functools.partial(jobs.store.of_node, DEAD, spooled, 10))
        assert "jobs_unfinished (node=?)" in plan, plan


def test_the_reaper_forgets_runs_dead_for_a_day_unless_their_node_holds_jobs(
    app: Flask, jobs: Jobs, make_job: MakeJob
) -> None:
    day = 86400
    beat(jobs, "node-gone", age=day + 60)
    beat(jobs, LIVE, "1.old", age=day + 60)
    beat(jobs, LIVE, "2.new")
    beat(jobs, "node-gone-with-a-job", age=day + 60)
    job = make_job(backend="mule")
    held_by(jobs, job, "node-gone-with-a-job", handle="not an owner")
    with app.app_context():
        assert jobs.store.prune_nodes(time.time() - day) == 2
    assert {(row["node"], row["run"]) for row in jobs.store.nodes()} == {
        (LIVE, "2.new"),
        ("node-gone-with-a-job", "1.1700000000"),
    }


def test_the_reaper_runs_on_every_node_and_purging_once_across_them(jobs: Jobs) -> None:
    from app.jobs.periodic import schedules

    by_task = {schedule.task: schedule for schedule in schedules}
    assert by_task["jobs.reap"].per_node and not by_task["jobs.purge"].per_node
    jobs._fire_periodic(Schedule("jobs.reap", 15, None, per_node=True), 150)
    assert jobs.store.get_by_unique_key("periodic:jobs.reap:node-here:150") is not None
    jobs._fire_periodic(Schedule("jobs.purge", 600, None), 600)
    assert jobs.store.get_by_unique_key("periodic:jobs.purge:600") is not None


def test_a_heartbeat_writes_this_runs_row_once_per_half_interval(jobs: Jobs) -> None:
    heartbeat = Heartbeat(jobs.store, interval=60)
    assert heartbeat.beat() is True
    assert heartbeat.beat() is False, "a sibling process beat just now"
    me = owners.here()
    assert [(r["node"], r["run"]) for r in jobs.store.nodes()] == [(me.node, me.run)]


def test_a_failed_heartbeat_is_logged_and_the_next_one_is_written(
    jobs: Jobs, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    heartbeat = Heartbeat(jobs.store, interval=0.05)
    failures = [OSError("disk full")]
    write = jobs.store.beat

    def flaky(*args: Any) -> None:
        if failures:
            raise failures.pop()
        write(*args)

    monkeypatch.setattr(jobs.store, "beat", flaky)
    heartbeat.start()
    try:
        wait_until(lambda: bool(jobs.store.nodes()), timeout=10, what="a heartbeat after the failed one")
    finally:
        heartbeat.stop()
    assert "heartbeat not recorded" in caplog.text and "disk full" in caplog.text


def test_nodes_lists_each_run_with_its_beat_age_and_liveness(app: Flask, jobs: Jobs) -> None:
    with_dead_and_live_nodes(jobs)
    listed = {row["node"]: row for row in jobs.nodes()}
    assert listed[LIVE]["alive"] and not listed[DEAD]["alive"]
    assert listed[DEAD]["beat_age"] >= TIMEOUT
    stats = app.test_client().get("/api/stats").get_json()
    assert {row["node"] for row in stats["nodes"]} == {LIVE, DEAD}


def test_a_retried_job_is_held_by_the_node_that_retried_it(jobs: Jobs, make_job: MakeJob) -> None:
    job = held_by(jobs, make_job(), DEAD)
    jobs.store.fail_unstarted(job.id, {"type": "X", "message": "x", "traceback": None})
    requeued = jobs.store.requeue(job.id, 1, handle=None)
    assert requeued is not None and requeued.node == "node-here"


def test_a_recreated_container_on_the_same_spool_volume_stays_the_same_node(
    app_factory: AppFactory, state_dir: Path
) -> None:
    """The name is kept in SPOOL_DIR: a new host name over the same spool files is the same node,
    whose previous run is gone at once, not after NODE_TIMEOUT."""
    spool = state_dir / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    assert owners.spool_node_name(spool) == owners.host_name(), "a first start keeps its host name"
    (spool / owners.NODE_FILE).write_text("container-before\n")
    app_factory(NODE_NAME="")
    assert owners.node_id() == "container-before"
    app_factory(NODE_NAME="named")
    assert owners.node_id() == "named", "NODE_NAME wins over the kept name"
