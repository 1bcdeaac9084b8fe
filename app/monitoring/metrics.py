"""What ``GET /metrics`` answers: the whole stack's figures, whichever worker is asked.

Counters and histograms kept by the processes themselves (HTTP requests here, jobs in
``app.jobs.metrics``) are summed from prometheus_client's multiprocess files; the rest is read
at scrape time: uWSGI's stats server (workers, listen queue, spoolers), /proc (mules), the
spool directory (backlog) and the job store (records by task and state).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from app import runtime
from app.jobs.states import JobStatus
from app.monitoring.monotonic import monotonic
from app.monitoring.uwsgi_stats import mule_pids, read_stats, spool_backlog

if TYPE_CHECKING:
    from app.jobs.store import JobStore
    from app.settings import Settings

log = logging.getLogger(__name__)

# prometheus_client reads this variable when it is first imported: the launcher sets it for uWSGI.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "http_requests", "Requests the app answered, by route (never the raw path), method and status",
    ["endpoint", "method", "status"],
)  # fmt: skip
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time the app took to answer, by route",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def metrics_dir(run_dir: Path) -> Path:
    """Where every process of the stack writes its counters: private, like the rest of RUN_DIR."""
    return run_dir / "metrics"


def reset_metrics_dir(run_dir: Path) -> Path:
    """Empty the metrics directory: only when the stack starts, never on a reload, so that no
    counter goes backwards while the stack runs."""
    path = metrics_dir(run_dir)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    return path


_slot: tuple[int, str] = (0, "")


def process_slot() -> str:
    """The name of this process's metrics files: its worker or mule slot, which a respawned
    process takes over (one uWSGI never runs two processes in a slot), else its pid.
    prometheus_client asks before every write of a value: the answer is kept per pid."""
    global _slot
    pid = os.getpid()
    if _slot[0] != pid:
        _slot = (pid, _find_slot())
    return _slot[1]


def _find_slot() -> str:
    uwsgi = runtime.uwsgi_module()
    if uwsgi is not None and uwsgi.worker_id() > 0:
        return f"worker{uwsgi.worker_id()}"
    if uwsgi is not None and uwsgi.mule_id() > 0:
        return f"mule{uwsgi.mule_id()}"
    return str(os.getpid())


def use_multiprocess_files() -> None:
    """Make each worker and mule keep one set of metrics files, continued by the process that
    replaces it (max-requests, RELOAD_ON_RSS, harakiri, a reload), instead of a new set per pid:
    every scrape reads every file, and a day of recycled workers would leave thousands. The
    directory is created if missing (never emptied: that is the launcher's, at start): uWSGI
    started without the launcher would otherwise fail every request on its first counter."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        values.ValueClass = values.MultiProcessValue(process_identifier=process_slot)


def scrape(settings: Settings, store: JobStore) -> bytes:
    """The text exposition of every metric of the stack."""
    registry = CollectorRegistry(auto_describe=False)
    directory = os.environ.get(MULTIPROC_ENV)
    replica = socket.gethostname()
    if directory:
        registry.register(_Replica(_AllProcesses(Path(directory)), replica))
    else:
        registry.register(_Replica(_ThisProcess(), replica))
    registry.register(_Replica(StackCollector(settings, store), replica))
    return generate_latest(registry)


class _Replica(Collector):
    """Every sample labelled ``replica`` with this host's name: behind one nginx, each scrape
    reaches one of several replicas, whose series must not merge into one."""

    def __init__(self, collector: Collector, replica: str) -> None:
        self.collector = collector
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        for family in self.collector.collect():
            labelled = [s._replace(labels={**s.labels, "replica": self.replica}) for s in family.samples]
            family.samples = labelled
            yield family


class _AllProcesses(Collector):
    """prometheus_client's multiprocess collector, minus the files being created right now: a
    process creates its file empty, then sizes it; read in between, it fails the whole scrape."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        files = []
        for path in self.directory.glob("*.db"):
            try:
                if path.stat().st_size > 0:
                    files.append(str(path))
            except FileNotFoundError:
                continue
        yield from MultiProcessCollector.merge(files, accumulate=True)


class _ThisProcess(Collector):
    """Outside uWSGI (flask run, tests) there is one process: its own registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class StackCollector(Collector):
    """Figures read when scraped: uWSGI workers and spoolers, mules, the spool backlog, job records."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield from self._uwsgi()
        yield from self._spool()
        yield from self._jobs()

    def _uwsgi(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("uwsgi_up", "1 when the uWSGI stats server answered this scrape")
        try:
            stats = read_stats(self.settings.stats_host, self.settings.stats_port)
        except (OSError, ValueError) as exc:
            log.warning("uWSGI stats server unreadable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        counters = self._monotonic(stats)
        yield from worker_metrics(stats, counters)
        yield from spooler_metrics(stats, counters)
        yield from mule_metrics(stats, self.settings.mules)

    def _monotonic(self, stats: dict[str, Any]) -> dict[str, float]:
        counters = {
            f"{field}:{worker['id']}": float(worker.get(field, 0))
            for worker in stats.get("workers", [])
            for field in ("requests", "exceptions", "harakiri_count", "respawn_count")
        }
        counters["listen_queue_errors"] = float(stats.get("listen_queue_errors", 0))
        for index, spooler in enumerate(stats.get("spoolers", []), 1):
            counters[f"spooler_respawns:{index}"] = float(spooler.get("respawns", 0))
        directory = os.environ.get(MULTIPROC_ENV)
        return monotonic(Path(directory), counters) if directory else counters

    def _spool(self) -> Iterator[Metric]:
        backlog = spool_backlog(self.settings.spool_dir)
        labels = ["spooler"]
        pending = GaugeMetricFamily(
            "uwsgi_spooler_pending_jobs", "Spool files due now (waiting or running)", labels=labels
        )
        later = GaugeMetricFamily(
            "uwsgi_spooler_scheduled_jobs",
            "Spool files due later (a delay or a retry's backoff)",
            labels=labels,
        )
        pending.add_metric([str(self.settings.spool_dir)], backlog.due)
        later.add_metric([str(self.settings.spool_dir)], backlog.later)
        yield pending
        yield later

    def _jobs(self) -> Iterator[Metric]:
        records = GaugeMetricFamily(
            "jobs_records",
            "Job records in the store, by task, backend and state",
            labels=["task", "backend", "state"],
        )
        mule_queue = 0
        for task, backend, status, count in self.store.counts():
            records.add_metric([task, backend, status], count)
            if backend == "mule" and status == JobStatus.QUEUED:
                mule_queue += count
        yield records
        queued = GaugeMetricFamily("uwsgi_mule_queued_jobs", "Mule jobs recorded as queued, not yet started")
        queued.add_metric([], mule_queue)
        yield queued


def worker_metrics(stats: dict[str, Any], counters: dict[str, float]) -> Iterator[Metric]:
    """Per worker, from the stats server; ``counters`` are its counters made monotonic."""
    labels = ["worker"]
    busy = GaugeMetricFamily("uwsgi_worker_busy", "1 while the worker runs a request, else 0", labels=labels)
    rss = GaugeMetricFamily("uwsgi_worker_rss_bytes", "Resident memory of the worker", labels=labels)
    avg_rt = GaugeMetricFamily(
        "uwsgi_worker_avg_response_time_seconds", "uWSGI's running average response time", labels=labels
    )
    requests = CounterMetricFamily("uwsgi_worker_requests", "Requests the worker slot served", labels=labels)
    exceptions = CounterMetricFamily(
        "uwsgi_worker_exceptions", "Exceptions that reached uWSGI in the worker slot", labels=labels
    )
    harakiri = CounterMetricFamily(
        "uwsgi_worker_harakiri", "Requests killed by harakiri in the worker slot", labels=labels
    )
    respawns = CounterMetricFamily(
        "uwsgi_worker_respawns", "Times the worker slot was (re)spawned", labels=labels
    )
    for worker in stats.get("workers", []):
        wid = str(worker["id"])
        busy.add_metric([wid], 1 if worker.get("status") == "busy" else 0)
        rss.add_metric([wid], worker.get("rss", 0))
        avg_rt.add_metric([wid], worker.get("avg_rt", 0) / 1e6)
        requests.add_metric([wid], counters[f"requests:{wid}"])
        exceptions.add_metric([wid], counters[f"exceptions:{wid}"])
        harakiri.add_metric([wid], counters[f"harakiri_count:{wid}"])
        respawns.add_metric([wid], counters[f"respawn_count:{wid}"])
    yield from (busy, rss, avg_rt, requests, exceptions, harakiri, respawns)
    queue = GaugeMetricFamily(
        "uwsgi_listen_queue", "Connections waiting in the socket's listen queue (TCP sockets only)"
    )
    queue.add_metric([], stats.get("listen_queue", 0))
    overflows = CounterMetricFamily("uwsgi_listen_queue_overflows", "Times the listen queue was full")
    overflows.add_metric([], counters["listen_queue_errors"])
    yield queue
    yield overflows


def spooler_metrics(stats: dict[str, Any], counters: dict[str, float]) -> Iterator[Metric]:
    """Per spooler process: whether it runs a job now, and its respawns."""
    running = GaugeMetricFamily(
        "uwsgi_spooler_running_jobs", "1 while the spooler process runs a job", labels=["spooler"]
    )
    respawns = CounterMetricFamily(
        "uwsgi_spooler_respawns", "Times the spooler process was respawned", labels=["spooler"]
    )
    for index, spooler in enumerate(stats.get("spoolers", []), 1):
        running.add_metric([str(index)], spooler.get("running", 0))
        respawns.add_metric([str(index)], counters[f"spooler_respawns:{index}"])
    yield running
    yield respawns


def mule_metrics(stats: dict[str, Any], configured: int) -> Iterator[Metric]:
    """Mules alive (children of the master that are neither workers nor spoolers) and configured."""
    alive = GaugeMetricFamily("uwsgi_mules_alive", "Mule processes running")
    alive.add_metric([], len(mule_pids(stats)))
    expected = GaugeMetricFamily("uwsgi_mules_configured", "Mule processes configured (MULES)")
    expected.add_metric([], configured)
    yield alive
    yield expected


def process_totals() -> dict[str, float]:
    """Sums of the processes' own counters, for the dashboard: requests, jobs succeeded and failed."""
    directory = os.environ.get(MULTIPROC_ENV)
    collector: Collector = _AllProcesses(Path(directory)) if directory else _ThisProcess()
    totals = {"requests": 0.0, "jobs_succeeded": 0.0, "jobs_failed": 0.0}
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == "http_requests_total":
                totals["requests"] += sample.value
            elif sample.name == "jobs_finished_total":
                key = f"jobs_{sample.labels['status']}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals
