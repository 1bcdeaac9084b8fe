"""The launcher (``python -m app.serve``): one stack per directory, a death reported, busy ports
refused before anything starts, private files."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from app.settings import PROJECT_ROOT
from tests.conftest import Stack, free_port, wait_until

pytestmark = pytest.mark.integration
# What a second start must leave exactly as the first stack made them.
STACK_FILES = (
    "uwsgi.sock",
    "uwsgi.pid",
    "uwsgi.fifo",
    "nginx/nginx.conf",
    "nginx/app.conf",
    "nginx/nginx.pid",
)


def launch(env: dict[str, str], *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``python -m app.serve COMMAND`` to its end, as an operator would; one that starts a
    stack instead of refusing is stopped (gracefully: it stops its servers) after ``timeout``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app.serve", *command],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.communicate(timeout=15)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def accepts(path: Path) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def snapshot(run_dir: Path) -> dict[str, tuple[int, int, bytes]]:
    """Each stack file's inode, modification time and (for regular files) contents."""
    found = {}
    for name in STACK_FILES:
        path = run_dir / name
        status = path.stat()
        content = path.read_bytes() if stat.S_ISREG(status.st_mode) else b""
        found[name] = (status.st_ino, status.st_mtime_ns, content)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def session_pids(session: int) -> set[int]:
    """Every process in a session: a server the launcher started, and its children."""
    listing = subprocess.run(["pgrep", "-s", str(session)], capture_output=True, text=True, check=False)
    return {int(pid) for pid in listing.stdout.split()}


def second_start(first: Stack, **env: str) -> subprocess.CompletedProcess[str]:
    """``make run`` again with the first stack's settings, on ports of its own, unless ``env`` says."""
    return launch({**first.env, "HTTP_PORT": str(free_port()), "STATS_PORT": str(free_port()), **env})


def test_a_second_start_on_the_same_directories_refuses_and_leaves_the_first_untouched(
    make_stack: Callable[..., Stack],
) -> None:
    first = make_stack(PROCESSES="2")
    run_dir = first.root / "run"
    before = snapshot(run_dir)
    assert first.process is not None
    running = f"launcher pid {first.process.pid}"
    addresses = (f"http://127.0.0.1:{first.http_port}/", f"127.0.0.1:{first.stats_port}")
    elsewhere = first.root / "elsewhere"

    for env, clash in (
        ({}, "RUN_DIR"),
        ({"RUN_DIR": str(elsewhere / "run"), "SPOOL_DIR": str(elsewhere / "spool")}, "DATA_DIR"),
        ({"RUN_DIR": str(elsewhere / "run"), "DATA_DIR": str(elsewhere / "data")}, "SPOOL_DIR"),
    ):
        refused = second_start(first, **env)
        assert refused.returncode == 4, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"another stack is running on {clash} ")
        assert running in line and all(address in line for address in addresses)
        assert "RUN_DIR, DATA_DIR and SPOOL_DIR" in line

    assert snapshot(run_dir) == before
    assert first.get("/api/info").status_code == 200
    assert first.process.poll() is None


def test_the_lock_outlives_a_reload_and_the_container_command_holds_it_too(
    make_stack: Callable[..., Stack],
) -> None:
    first = make_stack(PROCESSES="2")
    workers = {worker["pid"] for worker in first.stats()["workers"]}
    first.reload()  # uWSGI closes unknown descriptors when it re-executes itself

    def reloaded() -> bool:
        try:
            now = first.stats()["workers"]
        except OSError:
            return False
        return all(w["pid"] > 0 and w["pid"] not in workers for w in now)

    wait_until(reloaded, timeout=20, what="every worker to be replaced")
    assert second_start(first).returncode == 4
    first.stop()

    # `python -m app.serve uwsgi` execs the master, which keeps the launcher's pid and the lock.
    container = subprocess.Popen(
        [sys.executable, "-m", "app.serve", "uwsgi"],
        cwd=PROJECT_ROOT,
        env=first.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(lambda: accepts(first.root / "run" / "uwsgi.sock"), 30, "uWSGI to accept")
        refused = second_start(first)
        assert refused.returncode == 4, refused.stderr
        assert f"launcher pid {container.pid}" in refused.stderr
    finally:
        os.killpg(container.pid, signal.SIGKILL)
        container.wait()


@pytest.mark.faults
@pytest.mark.parametrize("victim", ["uwsgi", "nginx"])
def test_the_launcher_exits_1_naming_the_server_that_died_and_leaves_nothing_running(
    make_stack: Callable[..., Stack], victim: str, figure: Callable[[str], None]
) -> None:
    stack = make_stack(PROCESSES="2", MULES="1")
    assert stack.process is not None
    master = stack.master_pid()
    nginx = int((stack.root / "run" / "nginx" / "nginx.pid").read_text())
    # Workers, spoolers and mules share the master's session; nginx's workers share nginx's.
    processes = session_pids(master) | session_pids(nginx)
    assert len(processes) >= 2 + 2 + 1 + 1 + 2  # master, workers, spoolers, mule, nginx
    killed, name = (master, "the uWSGI master") if victim == "uwsgi" else (nginx, "nginx")

    started = time.monotonic()
    os.kill(killed, signal.SIGKILL)
    assert stack.process.wait(timeout=20) == 1
    lines = stack.logs().splitlines()
    assert f"stack stopped: {name} (pid {killed}) was killed by SIGKILL while serving" in lines
    wait_until(lambda: not any(alive(pid) for pid in processes), 5, "every process of the stack to end")
    figure(f"killed={victim} processes={len(processes)} exit=1 seconds={time.monotonic() - started:.1f}")

    # The kernel released the lock with its last holder: the same directories start again.
    again = make_stack(root=stack.root, PROCESSES="2")
    assert again.get("/healthz").status_code == 200


@pytest.fixture
def listening() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    ("command", "setting"),
    [("run", "HTTP_PORT"), ("run", "STATS_PORT"), ("uwsgi", "STATS_PORT"), ("uwsgi", "SOCKET")],
)
def test_a_busy_port_stops_start_up_with_one_line_naming_the_setting(
    nginx_present: None, state_dir: Path, listening: int, command: str, setting: str
) -> None:
    env = {
        **os.environ,
        "HTTP_PORT": str(free_port()),
        "STATS_PORT": str(free_port()),
        "DATA_DIR": str(state_dir / "data"),
        "SPOOL_DIR": str(state_dir / "spool"),
        "RUN_DIR": str(state_dir / "run"),
        setting: str(listening) if setting.endswith("PORT") else f"127.0.0.1:{listening}",
    }
    result = launch(env, command)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"configuration error: {setting}: 127.0.0.1:{listening} is already in use; choose another port"
    ]
    assert not (state_dir / "run" / "uwsgi.pid").exists() and not (state_dir / "run" / "nginx").exists()


@pytest.fixture
def readable_root() -> Iterator[Path]:
    """A state directory whose database and data directory an earlier version left readable."""
    root = Path(tempfile.mkdtemp(prefix="fus-"))
    (root / "data").mkdir()
    (root / "data").chmod(0o755)
    sqlite3.connect(root / "data" / "app.sqlite3").close()
    (root / "data" / "app.sqlite3").chmod(0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_database_spool_files_and_directories_are_private_and_media_still_served(
    make_stack: Callable[..., Stack], readable_root: Path
) -> None:
    stack = make_stack(root=readable_root, PROCESSES="2")
    image = BytesIO()
    Image.new("RGB", (320, 240), "teal").save(image, format="PNG")
    answer = stack.post(
        "/api/examples/thumbnails", data=image.getvalue(), headers={"Content-Type": "image/png"}
    )
    stack.wait_for_job(answer.json()["job"]["id"], ("succeeded",))
    assert stack.get(answer.json()["thumbnail_url"]).status_code == 200
    stack.enqueue("diag.noop", delay=300)  # stays in the spool directory as a file

    spool_files = [p for p in (readable_root / "spool").iterdir() if p.name.startswith("uwsgi_spoolfile")]
    assert spool_files
    readable = {}
    for top in ("data", "spool", "run"):
        for path in [readable_root / top, *(readable_root / top).rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            # nginx reaches uWSGI's socket through its group (chmod-socket = 660).
            allowed = 0o060 if path.name == "uwsgi.sock" else 0
            if mode & 0o077 & ~allowed:
                readable[str(path.relative_to(readable_root))] = oct(mode)
    assert readable == {}
    assert stat.S_IMODE((readable_root / "data" / "app.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((readable_root / "data").stat().st_mode) == 0o700
