"""Table 2, threads or processes: an IO-bound and a CPU-bound endpoint under processes x threads.

The IO endpoint sleeps 50 ms (a database or an API call: the GIL is released while it waits);
the CPU endpoint runs a fixed count of pure-Python iterations (about 5 ms), never "until 5 ms
have passed", which would count a thread's wait for the GIL as work. Closed loop with more
connections than request slots, so p99 includes the wait for a free slot."""

from __future__ import annotations

from typing import Any

from bench.config import Config, Progress, fmt, spread
from bench.load import wrk
from bench.procs import wait_until
from bench.servers import AUTH, Stack

SHAPES = ((1, 1), (1, 8), (2, 1), (2, 4), (4, 1), (4, 4), (8, 1))
CPU_N = 100_000
ENDPOINTS = {
    "io": "/api/diag/sleep?seconds=0.05",
    "cpu": f"/api/diag/cpu?n={CPU_N}",
}


def run(config: Config, progress: Progress) -> dict[str, Any]:
    rows = []
    steps = len(SHAPES) * len(ENDPOINTS) * config.repeats
    step = 0
    for processes, threads in SHAPES:
        stack = Stack(f"threads-{processes}x{threads}", processes=processes, threads=threads, mules=0)
        try:
            stack.start()
            row: dict[str, Any] = {"processes": processes, "threads": threads}
            for kind, path in ENDPOINTS.items():
                url = f"http://127.0.0.1:{stack.http_port}{path}"
                results = []
                for _ in range(config.repeats):
                    step += 1
                    progress("threads", step, steps, f"{processes}x{threads} {kind}")
                    # Requests wrk abandoned still run: start each run on idle workers.
                    wait_until(stack.idle, 60, "the workers to be idle")
                    results.append(
                        wrk(url, connections=config.connections, seconds=config.seconds, headers=AUTH)
                    )
                row[kind] = {
                    "rate": spread([r.rate for r in results]),
                    "p99_ms": spread([r.percentiles["p99"] for r in results]),
                    "errors": sum(r.errors for r in results),
                }
            rows.append(row)
        finally:
            stack.server.stop()
    return {"cpu_n": CPU_N, "endpoints": ENDPOINTS, "connections": config.connections, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"IO: `GET {result['endpoints']['io']}` (waits 50 ms). CPU: `GET {result['endpoints']['cpu']}` "
        f"({result['cpu_n']:,} pure-Python iterations, about 5 ms on one core). This stack, its nginx, "
        f"`wrk -t1 -c{result['connections']}` (closed loop, more connections than request slots: p99 "
        "includes the wait for a free slot).",
        "",
        "| processes x threads | IO req/s | IO p99 ms | CPU req/s | CPU p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['processes']}x{row['threads']} | {fmt(row['io']['rate'])} | {fmt(row['io']['p99_ms'])} "
            f"| {fmt(row['cpu']['rate'])} | {fmt(row['cpu']['p99_ms'])} "
            f"| {row['io']['errors'] + row['cpu']['errors']} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], axes: Any) -> None:
    labels = [f"{r['processes']}x{r['threads']}" for r in result["rows"]]
    io = [r["io"]["rate"]["median"] for r in result["rows"]]
    cpu = [r["cpu"]["rate"]["median"] for r in result["rows"]]
    positions = range(len(labels))
    axes.bar([p - 0.2 for p in positions], io, width=0.4, label="IO (50 ms wait)", color="#4477aa")
    axes.bar([p + 0.2 for p in positions], cpu, width=0.4, label="CPU (~5 ms)", color="#ee6677")
    axes.set_xticks(list(positions), labels)
    axes.set_xlabel("processes x threads")
    axes.set_ylabel("requests/s")
    axes.set_title("Threads or processes? (2 cores)")
    axes.legend()
