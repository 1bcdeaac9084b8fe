"""Table 3, jobs: this stack's spooler and mule beside RQ, Celery, Dramatiq and Huey.

Every system runs the same count of no-op jobs on 2 worker processes started beforehand;
results and records are kept as each does by default. Enqueue cost is the time of one enqueue
call in the enqueuing process (this stack: inside a request, /api/diag/enqueue); end to end runs
from the first enqueue to the last job's start (a no-op ends as it starts); queue wait is from
the enqueue to the job's start, at a constant rate (open loop)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import Config, Progress, fmt, spread
from bench.load import open_loop, percentile, wrk
from bench.peers import read_stamps
from bench.procs import BENCH_BIN, ROOT, Server, free_port, scratch_dir, wait_until
from bench.servers import AUTH, Stack, stats

WORKERS = 2
CHUNK = 500  # jobs per /api/diag/enqueue request
HTTP_CLIENTS = 8
WAIT_RATES = (200, 1000)
FINISH_TIMEOUT = 600.0
# The peers run quiet (RQ --quiet, Celery --loglevel WARNING, Huey -q): so does this stack, but
# for one row at its default, INFO, which logs two lines a job through uWSGI's log pipe.
LOG_LEVEL = "WARNING"
STACK_SETTINGS = "2 spoolers (SPOOLER_NICE=10), 2 mules, LOG_LEVEL=WARNING; every job's record kept"
# The rows of this stack (bench.targets judges the first two).
SPOOLER = "this stack: spooler, enqueued in a request"
SPOOLER_INFO = f"{SPOOLER}, LOG_LEVEL=INFO"
SPOOLER_ALONE = "this stack: spooler, one enqueue per request"
# A request's spooler jobs after its first wait in the worker's outbox to share a file.
HELD = "a request's jobs after its first share spool files (up to 100 a file, held about 5 ms)"
SPOOLER_BATCH = f"this stack: spooler, enqueue_many ({CHUNK} a call)"
MULE = "this stack: mule, enqueued in a request"
SPOOLER_HTTP = f"this stack: spooler, POST /api/jobs x {HTTP_CLIENTS} clients"


def _summary(
    enqueue_us: list[float], first: float, enqueued: float, last_start: float, count: int
) -> dict[str, Any]:
    span = max(last_start - first, 1e-9)
    return {
        "jobs": count,
        "enqueue_us_p50": percentile(enqueue_us, 50),
        "enqueue_us_p99": percentile(enqueue_us, 99),
        "enqueue_rate": count / max(enqueued - first, 1e-9),
        "end_to_end_rate": count / span,
        "end_to_end_s": span,
    }


# The figures of one run that a row reports as the median of its repeats (min-max beside it).
REPEATED = ("enqueue_us_p50", "enqueue_us_p99", "enqueue_rate", "end_to_end_rate", "end_to_end_s")


def _repeated(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the repeats of a case: each figure of ``REPEATED`` the median of the runs
    (NaN where a run has none, as over HTTP, which times no single enqueue), its spread kept
    under "spread"; counts summed; the rest from the first run."""
    row = dict(runs[0])
    row["runs"] = len(runs)
    row["spread"] = {}
    for key in REPEATED:
        values = [run[key] for run in runs]
        if any(value != value for value in values):
            row[key] = float("nan")
            continue
        row["spread"][key] = spread(values)
        row[key] = row["spread"][key]["median"]
    for key in ("jobs", "refused", "succeeded"):
        if key in row:
            row[key] = sum(run[key] for run in runs)
    return row


def _waits(pairs: list[tuple[float, float]]) -> dict[str, float]:
    waits = [(started - sent) * 1000 for sent, started in pairs]
    return {"jobs": len(waits), "p50_ms": percentile(waits, 50), "p99_ms": percentile(waits, 99)}


# ---- this stack -------------------------------------------------------------------------------


class StackJobs:
    """The stack with 2 spoolers and 2 mules; figures come from its own job records."""

    def __init__(self, name: str = "jobs-stack", **settings: object) -> None:
        settings = {"log_level": LOG_LEVEL, **settings}
        self.stack = Stack(name, processes=4, spooler_processes=WORKERS, mules=WORKERS, **settings)
        self.db_path = self.stack.state / "data" / "app.sqlite3"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.stack.http_port}{path}"

    def post(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.url(path), method="POST", headers=AUTH)
        with urllib.request.urlopen(request, timeout=120) as response:
            document: dict[str, Any] = json.load(response)
            return document

    def spooler_nice(self) -> int:
        """The lowest nice among the spoolers now: SPOOLER_NICE once one has run a job, unless
        this machine refused it (not root, no nice rlimit), then uWSGI's 19."""
        return min(
            os.getpriority(os.PRIO_PROCESS, int(spooler["pid"]))
            for spooler in stats(self.stack.stats_port)["spoolers"]
        )

    def records(self, since: float) -> list[sqlite3.Row]:
        with sqlite3.connect(self.db_path, timeout=30) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(
                "SELECT status, created_at, started_at, finished_at FROM jobs"
                " WHERE task = 'diag.noop' AND created_at >= ?",
                (since,),
            ).fetchall()

    def finished(self, since: float, count: int | None = None) -> list[sqlite3.Row]:
        """Wait until every job created since ``since`` (at least ``count``) has finished."""
        found: list[sqlite3.Row] = []

        def done() -> bool:
            self.stack.server.check_alive()
            found[:] = self.records(since)
            waiting = [r for r in found if r["finished_at"] is None]
            return not waiting and len(found) >= (count or 0)

        wait_until(done, FINISH_TIMEOUT, "the stack's jobs to finish", interval=0.2)
        return found

    def in_process(
        self, backend: str, count: int, batch: bool = False, per_request: int = CHUNK
    ) -> dict[str, Any]:
        """``count`` jobs enqueued inside requests, ``per_request`` a request, each call timed."""
        since = time.time()
        micros: list[float] = []
        refused = 0
        while len(micros) + refused < count:
            chunk = min(per_request, count - len(micros) - refused)
            query = f"count={chunk}&backend={backend}" + ("&batch=true" if batch else "")
            answer = self.post(f"/api/diag/enqueue?{query}")
            micros += answer["micros"]
            refused += answer.get("refused", 0)
        enqueued = time.time()
        rows = self.finished(since, count)
        return self._figures(rows, micros, since, enqueued, refused)

    def over_http(self, backend: str, seconds: float, script: Path) -> dict[str, Any]:
        since = time.time()
        load = wrk(
            self.url("/api/jobs"), connections=HTTP_CLIENTS, seconds=seconds, headers=AUTH, script=script
        )
        enqueued = time.time()
        rows = self.finished(since)
        figures = self._figures(rows, [], since, enqueued, load.errors)
        figures["http_enqueue_rate"] = load.rate
        figures["http_p99_ms"] = load.percentiles.get("p99")
        return figures

    def _figures(
        self, rows: list[sqlite3.Row], micros: list[float], since: float, enqueued: float, refused: int
    ) -> dict[str, Any]:
        first = min(r["created_at"] for r in rows)
        last = max(r["finished_at"] for r in rows)
        summary = _summary(micros, first, max(r["created_at"] for r in rows), last, len(rows))
        summary["succeeded"] = sum(1 for r in rows if r["status"] == "succeeded")
        summary["refused"] = refused
        summary["queue_wait"] = _waits([(r["created_at"], r["started_at"]) for r in rows if r["started_at"]])
        return summary

    def constant_rate(self, rate: float, seconds: float, busy: bool) -> dict[str, Any]:
        """Queue wait of spooler jobs POSTed at ``rate``/s; with ``busy``, while wrk saturates
        every HTTP worker with CPU-bound requests."""
        body = json.dumps({"task": "diag.noop", "backend": "spooler"}).encode()
        headers = {**AUTH, "Content-Type": "application/json"}
        saturate: threading.Thread | None = None
        if busy:
            url = self.url("/api/diag/cpu?n=100000")
            saturate = threading.Thread(
                target=wrk, args=(url,), kwargs={"connections": 32, "seconds": seconds + 1, "headers": AUTH}
            )
            saturate.start()
            time.sleep(0.5)  # wrk is up and the workers are busy before the first job
        since = time.time()
        load = open_loop(
            "127.0.0.1",
            self.stack.http_port,
            "/api/jobs",
            rate=rate,
            seconds=seconds,
            method="POST",
            body=body,
            headers=headers,
            connections=16,
        )
        if saturate is not None:
            saturate.join()
        rows = self.finished(since)
        return {
            "offered": rate,
            "sent": load.rate,
            "http_errors": load.errors,
            "http_p99_ms": load.percentiles["p99"],
            "spooler_nice": self.spooler_nice(),
            **_waits([(r["created_at"], r["started_at"]) for r in rows if r["started_at"]]),
        }


# ---- the peers --------------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    settings: str
    workers: list[list[str]]  # one command per worker (or one command that forks them)
    enqueue: Callable[[], Callable[[float], None]]  # made in this process, after REDIS_URL is set
    env: dict[str, str] | None = None


def _rq(worker_class: str) -> Peer:
    def producer() -> Callable[[float], None]:
        from redis import Redis
        from rq import Queue

        from bench.peers.rq_tasks import noop

        queue = Queue("bench", connection=Redis.from_url(os.environ["REDIS_URL"]))
        return lambda sent: queue.enqueue(noop, sent) and None

    command = [str(BENCH_BIN / "rq"), "worker", "--url", os.environ.get("REDIS_URL", ""), "--quiet"]
    label = "SimpleWorker" if worker_class.endswith("SimpleWorker") else "Worker (a fork per job)"
    return Peer(
        f"RQ {label}",
        "2 worker processes; results kept (result_ttl 500 s)",
        [[*command, "--worker-class", worker_class, "bench"] for _ in range(WORKERS)],
        producer,
    )


def _celery() -> Peer:
    def producer() -> Callable[[float], None]:
        from bench.peers.celery_tasks import noop

        return lambda sent: noop.delay(sent) and None

    command = [
        str(BENCH_BIN / "celery"), "-A", "bench.peers.celery_tasks", "worker", "--pool", "prefork",
        "--concurrency", str(WORKERS), "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "WARNING",
    ]  # fmt: skip
    return Peer(
        "Celery prefork",
        "prefork x 2, Redis broker and result backend (every result stored)",
        [command],
        producer,
    )


def _dramatiq() -> Peer:
    def producer() -> Callable[[float], None]:
        from bench.peers.dramatiq_tasks import noop

        return lambda sent: noop.send(sent) and None

    command = [
        str(BENCH_BIN / "dramatiq"),
        "bench.peers.dramatiq_tasks",
        "--processes",
        str(WORKERS),
        "--threads",
        "8",
    ]
    return Peer(
        "Dramatiq", "2 processes x 8 threads, Redis, no results, dramatiq_queue_prefetch=1000",
        [command], producer, {"dramatiq_queue_prefetch": "1000"},
    )  # fmt: skip


def _huey(backend: str) -> Peer:
    def producer() -> Callable[[float], None]:
        from bench.peers import huey_tasks

        task = huey_tasks.noop_redis if backend == "redis" else huey_tasks.noop_sqlite
        return lambda sent: task(sent) and None

    instance = f"bench.peers.huey_tasks.{backend}_huey"
    command = [str(BENCH_BIN / "huey_consumer"), instance, "-w", str(WORKERS), "-k", "process", "-q", "-n"]
    polls = ", polls (100 ms idle waits)" if backend == "sqlite" else ""
    return Peer(
        f"Huey {'Redis' if backend == 'redis' else 'SQLite'}", f"2 processes{polls}", [command], producer
    )


def peers() -> list[Peer]:
    return [
        _huey("redis"),
        _huey("sqlite"),
        _dramatiq(),
        _celery(),
        _rq("rq.worker.SimpleWorker"),
        _rq("rq.worker.Worker"),
    ]


def _flush_redis(port: int) -> None:
    from redis import Redis

    Redis(port=port).flushall()


def run_peer(
    peer: Peer, config: Config, state: Path, redis_port: int, progress: Callable[[str], None]
) -> dict[str, Any]:
    _flush_redis(redis_port)
    stamps = state / peer.name.replace(" ", "-").replace("(", "").replace(")", "")
    stamps.mkdir()
    env = {"BENCH_STAMPS": str(stamps), "PYTHONPATH": str(ROOT), **(peer.env or {})}
    servers = [
        Server(f"{peer.name} {i}", argv, state / f"{stamps.name}-{i}.log", env)
        for i, argv in enumerate(peer.workers)
    ]
    os.environ["BENCH_STAMPS"] = str(stamps)
    try:
        for server in servers:
            server.start()
        enqueue = peer.enqueue()

        def stamped(count: int, since: float) -> list[tuple[float, float]]:
            found: list[tuple[float, float]] = []

            def done() -> bool:
                for server in servers:
                    server.check_alive()
                found[:] = [p for p in read_stamps(stamps) if p[0] >= since]
                return len(found) >= count

            wait_until(done, FINISH_TIMEOUT, f"{peer.name}'s jobs to run", interval=0.1)
            return found

        # Workers up and idle before the clock starts: a few warm-up jobs must have run.
        warm = time.time()
        for _ in range(WORKERS * 2):
            enqueue(time.time())
        stamped(WORKERS * 2, warm)
        time.sleep(0.5)

        runs = []
        for repeat in range(config.repeats):
            progress(f"{peer.name}: {config.jobs:,} jobs ({repeat + 1} of {config.repeats})")
            micros = []
            first = time.time()
            for _ in range(config.jobs):
                started = time.perf_counter()
                enqueue(time.time())
                micros.append((time.perf_counter() - started) * 1e6)
            enqueued = time.time()
            pairs = stamped(config.jobs, first)
            runs.append(_summary(micros, first, enqueued, max(s for _, s in pairs), len(pairs)))
            time.sleep(0.5)  # idle again before the next clock starts
        result = _repeated(runs)

        rate = WAIT_RATES[0]
        progress(f"{peer.name}: queue wait at {rate}/s")
        since = time.time()
        total = int(rate * config.wait_seconds)
        for i in range(total):
            delay = since + i / rate - time.time()
            if delay > 0:
                time.sleep(delay)
            enqueue(time.time())
        result["queue_wait"] = {f"{rate}/s": _waits(stamped(total, since))}
        result["settings"] = peer.settings
        return result
    finally:
        for server in servers:
            server.stop()


# ---- the table --------------------------------------------------------------------------------


def run(config: Config, progress: Progress) -> dict[str, Any]:
    state = scratch_dir("jobs")
    all_peers = peers()
    repeats = config.repeats
    steps = 6 * repeats + 5 + (repeats + 1) * len(all_peers)
    step = 0

    def say(what: str) -> None:
        nonlocal step
        step += 1
        progress("jobs", step, steps, what)

    script = state / "enqueue.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        'wrk.body = \'{"task": "diag.noop", "backend": "spooler"}\'\n'
    )
    # What the default log level costs: the first row of the main stack with every job's two INFO
    # lines. It runs first, so that the target's row is never the favoured one: a row measured
    # later in a run came out slower in both orders tried (WARNING first 0.26 ms, INFO after it
    # 1.11 ms; INFO first 0.48 ms, WARNING after it 0.64 ms). Not the spool directory the first
    # row leaves behind: a fresh one swapped in after 10,000 jobs changed nothing.
    verbose = StackJobs("jobs-stack-info", log_level="INFO")
    try:
        verbose.stack.start()
        verbose.in_process("spooler", 20)
        info_runs = []
        for repeat in range(repeats):
            of = f"({repeat + 1} of {repeats})"
            say(f"this stack, spooler, LOG_LEVEL=INFO: {config.jobs:,} jobs in-process {of}")
            info_runs.append(verbose.in_process("spooler", config.jobs))
        info = _repeated(info_runs)
        info["settings"] = (
            STACK_SETTINGS.replace("WARNING", "INFO (the default: 2 lines a job)") + f"; {HELD}"
        )
    finally:
        verbose.stack.server.stop()
    rows: dict[str, Any] = {}
    waits: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {
        SPOOLER: [],
        SPOOLER_ALONE: [],
        SPOOLER_BATCH: [],
        MULE: [],
        SPOOLER_HTTP: [],
    }
    stack = StackJobs()  # its ports chosen now, free after the INFO stack's minutes
    try:
        stack.stack.start()
        stack.in_process("spooler", 20)  # warm-up: every worker's connection open
        # The repeats go round the cases in turn, as in the HTTP table: a burst of other load on
        # the machine then falls on all of them rather than on one case's runs.
        for repeat in range(repeats):
            of = f"({repeat + 1} of {repeats})"
            say(f"this stack, spooler: {config.jobs:,} jobs enqueued in-process {of}")
            runs[SPOOLER].append(stack.in_process("spooler", config.jobs))
            say(f"this stack, spooler: {config.jobs:,} jobs enqueued one per request {of}")
            runs[SPOOLER_ALONE].append(stack.in_process("spooler", config.jobs, per_request=1))
            say(f"this stack, spooler: {config.jobs:,} jobs enqueued in batches of {CHUNK} {of}")
            runs[SPOOLER_BATCH].append(stack.in_process("spooler", config.jobs, batch=True))
            say(f"this stack, mule: {config.jobs:,} jobs enqueued in-process {of}")
            runs[MULE].append(stack.in_process("mule", config.jobs))
            say(f"this stack, spooler: enqueued over HTTP by {HTTP_CLIENTS} clients {of}")
            runs[SPOOLER_HTTP].append(stack.over_http("spooler", config.seconds, script))
        rows[SPOOLER] = _repeated(runs[SPOOLER])
        rows[SPOOLER]["settings"] = f"{STACK_SETTINGS}; {HELD}"
        rows[SPOOLER_INFO] = info
        for name in (SPOOLER_ALONE, SPOOLER_BATCH, MULE, SPOOLER_HTTP):
            rows[name] = _repeated(runs[name])
        rows[SPOOLER_ALONE]["settings"] = (
            f"{STACK_SETTINGS}; each job its own spool file, written in the call"
        )
        for rate in WAIT_RATES:
            say(f"this stack, spooler: queue wait at {rate}/s")
            waits[f"{rate}/s, idle"] = stack.constant_rate(rate, config.wait_seconds, busy=False)
        say(f"this stack, spooler: queue wait at {WAIT_RATES[0]}/s while wrk saturates the workers")
        waits[f"{WAIT_RATES[0]}/s, HTTP workers saturated"] = stack.constant_rate(
            WAIT_RATES[0], config.wait_seconds, busy=True
        )
    finally:
        stack.stack.server.stop()
    # What the lowest CPU priority would cost: the busy cases again with the spoolers left at
    # uWSGI's nice 19, where SPOOLER_NICE's default (10, which needs root or a nice rlimit) takes
    # them back at their first job.
    shared = StackJobs("jobs-stack-nice19", spooler_nice=19)
    try:
        shared.stack.start()
        shared.in_process("spooler", 20)
        say(f"this stack, spoolers at nice 19: queue wait at {WAIT_RATES[1]}/s")
        waits[f"{WAIT_RATES[1]}/s, idle, SPOOLER_NICE=19"] = shared.constant_rate(
            WAIT_RATES[1], config.wait_seconds, busy=False
        )
        say(f"this stack, spoolers at nice 19: queue wait at {WAIT_RATES[0]}/s, workers saturated")
        waits[f"{WAIT_RATES[0]}/s, HTTP workers saturated, SPOOLER_NICE=19"] = shared.constant_rate(
            WAIT_RATES[0], config.wait_seconds, busy=True
        )
    finally:
        shared.stack.server.stop()

    redis_port = free_port()
    os.environ["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    os.environ["HUEY_SQLITE"] = str(state / "huey.sqlite3")
    # No persistence: the peers' own defaults are what is measured, not Redis's disk.
    redis_argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis = Server("redis", [*redis_argv, "--save", "", "--appendonly", "no"], state / "redis.log")
    try:
        redis.start()
        wait_until(lambda: _redis_up(redis_port), 30, "redis-server to answer")
        for peer in peers():  # made again now that REDIS_URL is known
            rows[peer.name] = run_peer(peer, config, state, redis_port, say)
    finally:
        redis.stop()
    return {"jobs": config.jobs, "workers": WORKERS, "rows": rows, "stack_waits": waits}


def _redis_up(port: int) -> bool:
    try:
        _flush_redis(port)
        return True
    except Exception:
        return False


def _cell(row: dict[str, Any], key: str) -> str:
    """A figure of a row: the median with min-max of its repeats, "-" when it has none."""
    if row[key] != row[key]:
        return "-"
    if key in row.get("spread", {}):
        return fmt(row["spread"][key])
    return f"{row[key]:,.0f}"


def markdown(result: dict[str, Any]) -> str:
    runs = max(row.get("runs", 1) for row in result["rows"].values())
    lines = [
        f"{result['jobs']:,} no-op jobs per system, {result['workers']} worker processes (spoolers, mules, "
        "workers) started and idle beforehand. Enqueue: one call in the enqueuing process (this stack: "
        "inside a request; the peers: a plain Python process). End to end: first enqueue to last job start. "
        f"Queue wait: enqueue to start, at a constant {WAIT_RATES[0]} jobs/s."
        + (
            f" Enqueue and end to end: median (min-max) of {runs} runs of {result['jobs']:,} jobs each,"
            " the cases of this stack taken in turn; queue wait: one run."
            if runs > 1
            else ""
        ),
        "",
        "| system | enqueue p50 us | enqueue p99 us | enqueue jobs/s | end to end jobs/s | "
        f"queue wait p50 ms at {WAIT_RATES[0]}/s | p99 ms | settings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        wait = row.get("queue_wait", {})
        wait = wait.get(f"{WAIT_RATES[0]}/s", {}) if f"{WAIT_RATES[0]}/s" in wait else {}
        p50 = f"{wait['p50_ms']:.2f}" if wait else "(below)"
        p99 = f"{wait['p99_ms']:.2f}" if wait else "(below)"
        settings = row.get("settings", STACK_SETTINGS)
        if row.get("refused"):
            settings += f"; {row['refused']} refused (queue full)"
        cells = [
            _cell(row, key) for key in ("enqueue_us_p50", "enqueue_us_p99", "enqueue_rate", "end_to_end_rate")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} | {p50} | {p99} | {settings} |")
    lines += [
        "",
        "This stack's spooler, queue wait from its records (created to started), jobs POSTed to /api/jobs "
        "at a constant rate (open loop); SPOOLER_NICE at its default (10) unless the case says 19 "
        "(uWSGI's own); the spoolers' nice column is what they ran at (19 where this machine refused "
        "to lower it); LOG_LEVEL=WARNING:",
        "",
        "| case | offered jobs/s | sent jobs/s | jobs | queue wait p50 ms | p99 ms | HTTP errors "
        "| spoolers' nice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, wait in result["stack_waits"].items():
        lines.append(
            f"| {name} | {wait['offered']:,} | {wait['sent']:,.0f} | {wait['jobs']:,} | {wait['p50_ms']:.2f} "
            f"| {wait['p99_ms']:.2f} | {wait['http_errors']} | {wait.get('spooler_nice', '')} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], axes: Any) -> None:
    names = list(result["rows"])
    rates = [result["rows"][n]["end_to_end_rate"] for n in names]
    colours = ["#ee6677" if n.startswith("this stack") else "#4477aa" for n in names]
    axes.barh(
        [n.replace("this stack: ", "stack: ").replace(", enqueued in a request", "")[:48] for n in names],
        rates,
        color=colours,
    )
    axes.set_xlabel("no-op jobs/s, first enqueue to last start")
    axes.set_title(f"{result['jobs']:,} jobs, {result['workers']} worker processes")
