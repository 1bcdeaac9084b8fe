"""Table 1, HTTP: this stack beside gunicorn (sync, gthread) and bare uWSGI, all behind nginx,
and a minimal Flask app on bare uWSGI and gunicorn sync: the ceiling of their ratio (peak only).

Closed loop (wrk -t1) finds each server's peak; then a constant-rate run at 50% and 90% of
that peak gives p50/p99/p99.9 from the intended send times."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench.config import Config, Progress, fmt, spread
from bench.load import LoadResult, open_loop, wrk
from bench.procs import Server, scratch_dir, wait_until
from bench.servers import APP_MODULE, AUTH, MINIMAL_MODULE, Stack, answers, bare_uwsgi, gunicorn, plain_nginx

PROCESSES = 4
THREADS = 1
PATH = "/api/info"
LOADS = (0.5, 0.9)


def _stack(exit: ExitStack) -> tuple[int, str]:
    stack = Stack("stack", processes=PROCESSES, threads=THREADS)
    exit.callback(stack.server.stop)
    stack.start()
    return stack.http_port, stack.command


def _stack_uwsgi(exit: ExitStack) -> tuple[int, str]:
    stack = Stack("stack-uwsgi", command="uwsgi", processes=PROCESSES, threads=THREADS)
    exit.callback(stack.server.stop)
    stack.start()
    return _behind_nginx(exit, stack.state, stack.socket, "uwsgi"), stack.command + " + plain nginx"


def _bare_uwsgi(module: str = APP_MODULE) -> Callable[[ExitStack], tuple[int, str]]:
    def start(exit: ExitStack) -> tuple[int, str]:
        state = scratch_dir("bare" if module == APP_MODULE else "bare-minimal")
        sock = state / "app.sock"
        server = bare_uwsgi("bare uWSGI", state, sock, PROCESSES, THREADS, module)
        _start(exit, server, sock)
        return _behind_nginx(exit, state, sock, "uwsgi"), " ".join(server.command)

    return start


def _gunicorn(worker_class: str, module: str = APP_MODULE) -> Callable[[ExitStack], tuple[int, str]]:
    def start(exit: ExitStack) -> tuple[int, str]:
        state = scratch_dir(f"gunicorn-{worker_class}" + ("" if module == APP_MODULE else "-minimal"))
        sock = state / "app.sock"
        server = gunicorn(f"gunicorn {worker_class}", state, sock, PROCESSES, THREADS, worker_class, module)
        _start(exit, server, sock)
        return _behind_nginx(exit, state, sock, "http"), " ".join(server.command)

    return start


def _start(exit: ExitStack, server: Server, sock: Path) -> None:
    exit.callback(server.stop)
    server.start()

    def up() -> bool:
        server.check_alive()
        return sock.exists()

    wait_until(up, 60, f"{server.name} to listen")


def _behind_nginx(exit: ExitStack, state: Path, sock: Path, protocol: str) -> int:
    nginx, port = plain_nginx(state, sock, protocol)
    exit.callback(nginx.stop)
    nginx.start()

    def up() -> bool:
        nginx.check_alive()
        return answers(f"http://127.0.0.1:{port}{PATH}")

    wait_until(up, 30, "nginx to answer")
    return port


CASES: dict[str, Callable[[ExitStack], tuple[int, str]]] = {
    "this stack (launcher, uwsgi.ini, its nginx)": _stack,
    "this stack's uWSGI, plain nginx": _stack_uwsgi,
    "bare uWSGI (minimal config)": _bare_uwsgi(),
    "gunicorn sync": _gunicorn("sync"),
    "gunicorn gthread": _gunicorn("gthread"),
}
# Peak only: bench.minimal_app (Flask and one route) on bare uWSGI and on gunicorn sync. Flask's
# own work is common to every server and bounds the ratio between them: this pair's ratio is the
# most that any uWSGI setting could make of the real app's.
MINIMAL_UWSGI = "bare uWSGI, minimal Flask app"
MINIMAL_SYNC = "gunicorn sync, minimal Flask app"
CEILING: dict[str, Callable[[ExitStack], tuple[int, str]]] = {
    MINIMAL_UWSGI: _bare_uwsgi(MINIMAL_MODULE),
    MINIMAL_SYNC: _gunicorn("sync", MINIMAL_MODULE),
}
SYNC = "gunicorn sync"
BARE = "bare uWSGI (minimal config)"
STACK = "this stack (launcher, uwsgi.ini, its nginx)"
# The comparison: every server behind the same (plain) nginx, this stack's uWSGI with its
# production settings among them. STACK adds the stack's own nginx configuration on top.
STACK_UWSGI = "this stack's uWSGI, plain nginx"


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}{PATH}"


def run(config: Config, progress: Progress) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    steps = len(CASES) * config.repeats * (1 + len(LOADS)) + len(CEILING) * config.repeats
    step = 0
    # Every server runs at once (idle ones cost nothing) and the repeats go round them in turn:
    # a burst of other load on the machine then falls on all of them, not on one server's runs.
    with ExitStack() as exit:
        urls: dict[str, tuple[int, str]] = {}
        for name, start in {**CASES, **CEILING}.items():
            urls[name] = start(exit)
            wrk(_url(urls[name][0]), connections=config.connections, seconds=1, headers=AUTH)  # warm-up
        peaks: dict[str, list[LoadResult]] = {name: [] for name in urls}
        for _ in range(config.repeats):
            for name, (port, _command) in urls.items():
                step += 1
                progress("http", step, steps, f"{name}: closed loop")
                peaks[name].append(wrk(_url(port), connections=config.connections, seconds=config.seconds))
        opens: dict[str, dict[str, list[LoadResult]]] = {name: {} for name in CASES}
        for load in LOADS:
            for _ in range(config.repeats):
                for name in CASES:
                    port = urls[name][0]
                    step += 1
                    rate = spread([r.rate for r in peaks[name]])["median"] * load
                    progress("http", step, steps, f"{name}: open loop at {rate:,.0f}/s")
                    opens[name].setdefault(f"{load:.0%}", []).append(
                        open_loop("127.0.0.1", port, PATH, rate=rate, seconds=config.seconds)
                    )
    for name, (_port, command) in urls.items():
        rows[name] = {
            "command": command,
            "peak": spread([r.rate for r in peaks[name]]),
            "peak_errors": sum(r.errors for r in peaks[name]),
            "wrk_p99_ms": spread([r.percentiles.get("p99", float("nan")) for r in peaks[name]]),
            "open": {
                load: {
                    "offered": results[0].offered,
                    "sent": spread([r.rate for r in results]),
                    "errors": sum(r.errors for r in results),
                    **{p: spread([r.percentiles[p] for r in results]) for p in ("p50", "p99", "p99.9")},
                }
                for load, results in opens.get(name, {}).items()
            },
        }
    ceiling = {name: rows.pop(name) for name in CEILING}
    for row in rows.values():
        row["vs_gunicorn_sync"] = row["peak"]["median"] / rows[SYNC]["peak"]["median"]
        row["vs_bare_uwsgi"] = row["peak"]["median"] / rows[BARE]["peak"]["median"]
    minimal_ratio = ceiling[MINIMAL_UWSGI]["peak"]["median"] / ceiling[MINIMAL_SYNC]["peak"]["median"]
    return {
        "processes": PROCESSES,
        "threads": THREADS,
        "path": PATH,
        "rows": rows,
        "ceiling": ceiling,
        "minimal_vs_gunicorn_sync": minimal_ratio,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    lines = [
        f"`GET {result['path']}` (a small JSON document from the Flask app), {result['processes']} "
        f"processes x {result['threads']} thread, through nginx, every server running at once and the "
        "repeats taken in turn. Peak: `wrk -t1`, closed loop. "
        "Latency: constant rate at 50% and 90% of each server's own peak, from the intended send time "
        "(median of the repeats, min-max in brackets).",
        "",
        "| server | peak req/s | vs gunicorn sync | vs bare uWSGI | errors |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {fmt(row['peak'])} | {row['vs_gunicorn_sync']:.2f}x | {row['vs_bare_uwsgi']:.2f}x "
            f"| {row['peak_errors']} |"
        )
    ceiling = result.get("ceiling")
    if ceiling:
        sync = ceiling[MINIMAL_SYNC]["peak"]["median"]
        lines += [
            "",
            "What bounds these ratios: Flask's own work per request, the same under every server. The "
            "same document from a minimal Flask app (`bench/minimal_app.py`: one route, nothing of "
            "this app), closed loop, measured in the same rounds:",
            "",
            "| server | peak req/s | vs gunicorn sync, minimal app | errors |",
            "|---|---|---|---|",
        ]
        for name, row in ceiling.items():
            ratio = row["peak"]["median"] / sync
            lines.append(f"| {name} | {fmt(row['peak'])} | {ratio:.2f}x | {row['peak_errors']} |")
    lines += [
        "",
        "| server | load | offered req/s | sent req/s | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        for load, o in row["open"].items():
            lines.append(
                f"| {name} | {load} | {o['offered']:,.0f} | {fmt(o['sent'])} | {fmt(o['p50'], 2)} "
                f"| {fmt(o['p99'], 2)} | {fmt(o['p99.9'], 2)} | {o['errors']} |"
            )
    return "\n".join(lines)


def plot(result: dict[str, Any], axes: Any) -> None:
    everything = {**result["rows"], **result.get("ceiling", {})}
    names = list(everything)
    peaks = [everything[n]["peak"] for n in names]
    medians = [p["median"] for p in peaks]
    errs = [
        [m - p["min"] for m, p in zip(medians, peaks, strict=True)],
        [p["max"] - m for m, p in zip(medians, peaks, strict=True)],
    ]
    colours = ["#4477aa" if n in result["rows"] else "#bbbbbb" for n in names]
    axes.barh([n.split(" (")[0] for n in names], medians, xerr=errs, color=colours)
    axes.set_xlabel("requests/s (closed loop, wrk -t1)")
    axes.set_title(f"GET {result['path']} through nginx, {result['processes']} processes")
