"""``python -m bench.cpu [SECONDS] [ROUNDS]``: CPU time per request, by process role.

Requests/s move by a third between runs on a shared 2-core machine; the CPU time each process
spends per request moves by a few percent. This starts this stack and bare uWSGI (as the HTTP
table does), sends each ``wrk -t1`` for SECONDS in turn, ROUNDS times, and prints the median
microseconds of CPU (user + system, from /proc/PID/stat) per request of nginx, the uWSGI master
and its children (workers; spoolers and mules stay idle)."""

from __future__ import annotations

import os
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from bench import http_servers
from bench.load import wrk
from bench.procs import _running, stop_all
from bench.servers import children

TICKS = os.sysconf("SC_CLK_TCK")
CASES = (http_servers.STACK, http_servers.BARE)


def role(pid: int, parent_role: str | None) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    if b"nginx" in command:
        return "nginx"
    if parent_role == "uwsgi master":
        return "uwsgi workers"
    return "uwsgi master" if b"uwsgi" in command else "launcher"


def cpu_by_role(root: int) -> dict[int, tuple[str, float]]:
    """Every process under ``root``: its role and CPU seconds so far."""
    found: dict[int, tuple[str, float]] = {}

    def visit(pid: int, parent_role: str | None) -> None:
        try:
            mine = role(pid, parent_role)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        found[pid] = (mine, (int(fields[11]) + int(fields[12])) / TICKS)
        for child in children(pid):
            visit(child, mine)

    visit(root, None)
    return found


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in CASES}
    try:
        with ExitStack() as exit:
            started = {}
            for name in CASES:
                before = set(_running)
                port = http_servers.CASES[name](exit)[0]
                roots = [server.process.pid for server in _running - before if server.process]
                started[name] = (http_servers._url(port), roots)
                wrk(started[name][0], connections=32, seconds=1)  # warm-up
            for _ in range(rounds):
                for name, (url, roots) in started.items():
                    before_cpu = {pid: v for root in roots for pid, v in cpu_by_role(root).items()}
                    result = wrk(url, connections=32, seconds=seconds)
                    after_cpu = {pid: v for root in roots for pid, v in cpu_by_role(root).items()}
                    spent: dict[str, float] = {}
                    for pid, (kind, total) in after_cpu.items():
                        spent[kind] = spent.get(kind, 0.0) + total - before_cpu.get(pid, (kind, 0.0))[1]
                    served = result.rate * seconds
                    for kind, total in spent.items():
                        figures[name].setdefault(kind, []).append(total / served * 1e6)
                    figures[name].setdefault("requests/s", []).append(result.rate)
    finally:
        stop_all()
    for name, kinds in figures.items():
        cells = ", ".join(f"{kind} {statistics.median(values):,.0f}" for kind, values in kinds.items())
        print(f"{name}: {cells} (us of CPU per request, median of {rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
