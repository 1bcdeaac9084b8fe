"""Table 4, memory: PSS of every uWSGI worker, spooler and mule, with the app loaded in the
master and forked (this stack's setting) against ``lazy-apps``, and gunicorn's workers.

PSS (/proc/PID/smaps_rollup) splits each shared page between the processes that map it, so
the PSS of all processes adds up to what they really take; RSS would count shared pages in
every process."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.config import Config, Progress
from bench.load import wrk
from bench.procs import PROJECT_PYTHON, scratch_dir, wait_until
from bench.servers import Stack, answers, children, gunicorn, plain_nginx

PROCESSES = 4
# The launcher's own uWSGI command and environment, plus one option: lazy-apps.
LAZY = (
    "import os; from app.settings import Settings; "
    "from app.launcher.master import uwsgi_command, uwsgi_env; "
    "env = uwsgi_env(Settings.from_env(os.environ)); "
    "command = uwsgi_command() + ['--lazy-apps']; "
    "os.execve(command[0], command, env)"
)


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def _measure(roles: dict[str, list[int]]) -> dict[str, Any]:
    by_role = {role: [pss_kb(pid) for pid in pids] for role, pids in roles.items()}
    return {
        "per_process_mb": {role: sum(kbs) / len(kbs) / 1024 for role, kbs in by_role.items() if kbs},
        "count": {role: len(kbs) for role, kbs in by_role.items()},
        "total_mb": sum(sum(kbs) for kbs in by_role.values()) / 1024,
    }


def _touch(port: int) -> None:
    """Every worker serves requests before it is measured."""
    wrk(f"http://127.0.0.1:{port}/api/info", connections=8, seconds=1)


def _stack(lazy: bool) -> dict[str, Any]:
    name = "mem-lazy" if lazy else "mem-prefork"
    stack = Stack(name, command="uwsgi", processes=PROCESSES, spooler_processes=2, mules=1)
    if lazy:
        stack.server.command = [str(PROJECT_PYTHON), "-c", LAZY]
    with ExitStack() as exit:
        exit.callback(stack.server.stop)
        stack.start()
        nginx, port = plain_nginx(stack.state, stack.socket, "uwsgi")
        exit.callback(nginx.stop)
        nginx.start()
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/api/info"), 30, "nginx to answer")
        _touch(port)
        return _measure(stack.pids())


def _gunicorn() -> dict[str, Any]:
    state = scratch_dir("mem-gunicorn")
    sock = state / "app.sock"
    server = gunicorn("gunicorn", state, sock, PROCESSES, 1, "sync")
    with ExitStack() as exit:
        exit.callback(server.stop)
        server.start()
        wait_until(sock.exists, 60, "gunicorn to listen")
        nginx, port = plain_nginx(state, sock, "http")
        exit.callback(nginx.stop)
        nginx.start()
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/api/info"), 30, "nginx to answer")
        _touch(port)
        return _measure({"master": [server.pid], "worker": children(server.pid)})


def run(config: Config, progress: Progress) -> dict[str, Any]:
    rows = {}
    cases = {
        "this stack: app loaded in the master, forked (lazy-apps = false)": lambda: _stack(lazy=False),
        "this stack with lazy-apps = true": lambda: _stack(lazy=True),
        "gunicorn sync, --preload": _gunicorn,
    }
    for step, (name, measure) in enumerate(cases.items(), 1):
        progress("memory", step, len(cases), name)
        rows[name] = measure()
    print(f"memory measured with python {sys.version.split()[0]}", file=sys.stderr)
    return {"processes": PROCESSES, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['processes']} worker processes (this stack: plus 2 spoolers and 1 mule), each having "
        "served requests; PSS in MB from /proc/PID/smaps_rollup.",
        "",
        "| server | master | per worker | per spooler | per mule | total (all processes) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        per = row["per_process_mb"]
        cells = [
            f"{per[role]:.1f}" if role in per else "-" for role in ("master", "worker", "spooler", "mule")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {row['total_mb']:.1f} |")
    return "\n".join(lines)


def plot(result: dict[str, Any], axes: Any) -> None:
    names = list(result["rows"])
    roles = ("master", "worker", "spooler", "mule")
    left = [0.0] * len(names)
    colours = {"master": "#bbbbbb", "worker": "#4477aa", "spooler": "#ee6677", "mule": "#228833"}
    labels = ["stack, preforked", "stack, lazy-apps", "gunicorn sync"][: len(names)]
    for role in roles:
        widths = [
            result["rows"][n]["per_process_mb"].get(role, 0) * result["rows"][n]["count"].get(role, 0)
            for n in names
        ]
        axes.barh(labels, widths, left=left, label=role, color=colours[role])
        left = [a + b for a, b in zip(left, widths, strict=False)]
    axes.set_xlabel("PSS, MB (all processes)")
    axes.set_title("Memory")
    axes.legend()
