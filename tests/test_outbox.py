"""The spooler's outbox: jobs a request enqueues after its first share spool files, and a
journal keeps them until they are spooled, for the reaper to spool if their worker dies."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from flask import Flask

from app.jobs import Jobs
from app.jobs import owner as owners
from app.jobs.backends import outbox as outbox_module
from app.jobs.backends.outbox import Outbox
from app.jobs.backends.spooler import OUTBOX_DIR
from app.jobs.errors import JobError
from app.jobs.store import new_job_id
from tests.conftest import use_real_backends, wait_until
from tests.test_nodes import FakeUwsgi

HOUR = 3600.0


class Files:
    """A stand-in for the spooler's file writer: keeps each file's job ids; refuses on demand."""

    def __init__(self) -> None:
        self.files: list[list[str]] = []
        self.refusing = False
        self.refused = 0

    def __call__(self, job_ids: Sequence[str]) -> None:
        if self.refusing:
            self.refused += 1
            raise JobError("the spooler refused a batch: No space left on device")
        self.files.append(list(job_ids))


def ids(count: int) -> list[str]:
    return [new_job_id(0) for _ in range(count)]


def started(files: Files, directory: Path, batch: int = 100, linger: float = HOUR) -> Outbox:
    outbox = Outbox(files, directory, batch=batch, linger=linger)
    outbox.start()
    return outbox


def hold(outbox: Outbox, job_id: str) -> None:
    """What ``enqueue`` does with a held job: reserve its id, commit its record, add it."""
    assert outbox.reserve(job_id)
    outbox.add(job_id)


def write_journal(path: Path, job_ids: list[str], tail: str = "") -> None:
    """A journal as a process that died left it: an id a line, and maybe a line cut short."""
    path.write_text("".join(f"{job_id}\n" for job_id in job_ids) + tail)


def journal(directory: Path) -> list[str]:
    """The job ids in this process's journal."""
    me = owners.here()
    return (directory / f"{me.run}-{me.pid}").read_text().split()


def test_held_jobs_share_one_file_once_a_batch_of_them_waits(tmp_path: Path) -> None:
    files = Files()
    outbox = started(files, tmp_path, batch=3)
    held = ids(4)
    for job_id in held:
        hold(outbox, job_id)
    assert files.files == [held[:3]]
    assert journal(tmp_path) == held[3:]


def test_held_jobs_are_journaled_until_the_flush_spools_them(tmp_path: Path) -> None:
    files = Files()
    outbox = started(files, tmp_path)
    held = ids(2)
    for job_id in held:
        hold(outbox, job_id)
    assert files.files == []
    assert journal(tmp_path) == held
    outbox.flush()
    assert files.files == [held]
    assert journal(tmp_path) == []


def test_a_held_job_goes_after_the_linger_though_no_other_job_or_flush_comes(tmp_path: Path) -> None:
    files = Files()
    outbox = started(files, tmp_path, linger=0.05)
    held = ids(1)
    hold(outbox, held[0])
    wait_until(
        lambda: files.files == [held] and journal(tmp_path) == [],
        timeout=5,
        what="the outbox's thread to spool the job and empty its journal",
    )


def test_a_refused_file_stays_journaled_is_tried_again_and_no_job_is_held_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(outbox_module, "RETRY_AFTER", 0.1)
    files = Files()
    outbox = started(files, tmp_path)
    held = ids(2)
    for job_id in held:
        hold(outbox, job_id)
    files.refusing = True
    outbox.flush()
    assert files.files == [] and journal(tmp_path) == held
    # While the spooler refuses, a new job is not held: its caller spools it and hears the refusal.
    assert outbox.reserve(new_job_id(0)) is False
    wait_until(lambda: files.refused >= 3, timeout=5, what="the outbox to try the file again")
    files.refusing = False
    wait_until(
        lambda: files.files == [held] and journal(tmp_path) == [],
        timeout=5,
        what="the refused jobs to be spooled and their journal emptied",
    )
    assert outbox.reserve(new_job_id(0)) is True
    said = [record.getMessage() for record in caplog.records]
    assert len([line for line in said if "refused their file" in line]) == 1, said
    assert said[-1] == "the jobs held for the spooler are spooled now"


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_the_reaper_spools_a_dead_processs_journal_and_leaves_a_live_ones(tmp_path: Path) -> None:
    files = Files()
    outbox = started(files, tmp_path, batch=2)
    mine = ids(1)
    hold(outbox, mine[0])
    run = owners.here().run
    orphans = ids(3)
    # A line cut short by the kill is no job id, and is left out.
    write_journal(tmp_path / f"{run}-{dead_pid()}", orphans, tail=orphans[0][:7])
    earlier = ids(1)
    write_journal(tmp_path / f"1.1700000000-{owners.here().pid}", earlier)  # an earlier run's
    assert outbox.recover() == 4
    assert sorted(files.files) == sorted([orphans[:2], orphans[2:], earlier])
    assert [path.name for path in tmp_path.iterdir()] == [f"{run}-{owners.here().pid}"]
    assert journal(tmp_path) == mine


def test_a_journal_left_under_a_new_processs_name_is_set_aside_for_the_reaper(tmp_path: Path) -> None:
    # A dead worker's pid, used again within the run by the process starting now.
    me = owners.here()
    left = ids(2)
    write_journal(tmp_path / f"{me.run}-{me.pid}", left)
    files = Files()
    outbox = started(files, tmp_path)
    hold(outbox, new_job_id(0))
    outbox.flush()
    assert outbox.recover() == 2
    assert files.files[-1] == left


def test_a_journal_the_spooler_refuses_stays_for_the_next_reap(tmp_path: Path) -> None:
    orphans = ids(2)
    write_journal(tmp_path / f"{owners.here().run}-{dead_pid()}", orphans)
    files = Files()
    outbox = started(files, tmp_path)
    files.refusing = True
    assert outbox.recover() == 0
    files.refusing = False
    assert outbox.recover() == 2
    assert files.files == [orphans] and list(tmp_path.iterdir()) == []


def test_a_job_whose_journal_line_cannot_be_written_is_not_held(tmp_path: Path) -> None:
    blocked = tmp_path / "outbox"
    blocked.write_text("a file where the journals' folder should be")
    outbox = started(Files(), blocked)
    assert outbox.reserve(new_job_id(0)) is False


def test_the_reaper_task_spools_the_outboxes_of_dead_workers(app: Flask, jobs: Jobs, tmp_path: Path) -> None:
    from app.jobs.maintenance import reap

    uwsgi = FakeUwsgi(tmp_path)
    use_real_backends(jobs, uwsgi, tmp_path)
    orphans = ids(3)
    (tmp_path / OUTBOX_DIR).mkdir()
    write_journal(tmp_path / OUTBOX_DIR / f"{owners.here().run}-{dead_pid()}", orphans)
    with app.app_context():
        assert reap()["outbox_recovered"] == 3
    assert uwsgi.spooled_ids() == orphans


@pytest.fixture
def spooled(jobs: Jobs, tmp_path: Path) -> FakeUwsgi:
    """The job layer as in a uWSGI worker: the real spooler backend, holding jobs back, writing
    to a stand-in of uWSGI's spool()."""
    uwsgi = FakeUwsgi(tmp_path)
    use_real_backends(jobs, uwsgi, tmp_path)
    jobs.spooler.outbox.start()
    jobs.spooler.outbox.linger = HOUR
    jobs.holds_back = True
    return uwsgi


def test_a_requests_first_spooler_job_goes_at_once_and_the_rest_share_a_file_before_it_answers(
    app: Flask, jobs: Jobs, spooled: FakeUwsgi
) -> None:
    answer = app.test_client().post("/api/diag/enqueue?count=4&backend=spooler")
    assert answer.status_code == 200, answer.text
    made = [job.id for job in reversed(jobs.list(task="diag.noop"))]
    assert spooled.spooled == [{b"job": made[0].encode()}, {b"jobs": ",".join(made[1:]).encode()}]


def test_a_delayed_job_is_never_held(app: Flask, jobs: Jobs, spooled: FakeUwsgi) -> None:
    with app.test_request_context("/"):
        first = jobs.enqueue("diag.noop", backend="spooler")
        delayed = jobs.enqueue("diag.noop", backend="spooler", delay=60)
    assert spooled.spooled_ids() == [first.id, delayed.id] and spooled.spooled[1][b"at"]


def test_outside_a_request_every_spooler_job_goes_at_once(app: Flask, jobs: Jobs, spooled: FakeUwsgi) -> None:
    with app.app_context():
        made = [jobs.enqueue("diag.noop", backend="spooler") for _ in range(3)]
    assert spooled.spooled == [{b"job": job.id.encode()} for job in made]


def test_a_unique_job_enqueued_again_in_the_request_is_neither_held_nor_spooled_twice(
    app: Flask, jobs: Jobs, spooled: FakeUwsgi
) -> None:
    with app.test_request_context("/"):
        first = jobs.enqueue("diag.noop", backend="spooler", unique_key="once")
        again = jobs.enqueue("diag.noop", backend="spooler", unique_key="once")
        jobs.spooler.outbox.flush()
    assert again.id == first.id
    assert spooled.spooled == [{b"job": first.id.encode()}]
