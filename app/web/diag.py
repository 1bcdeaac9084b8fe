"""Diagnostic endpoints for tests and benchmarks: operator-only, off with JOBS_DIAG=false."""

from __future__ import annotations

import os
import time

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from app.jobs import QueueFull, current_jobs
from app.web.auth import operator_only
from app.web.errors import ApiError

bp = Blueprint("diag", __name__, url_prefix="/api/diag")

MAX_SLEEP = 600.0


@bp.get("/sleep")
@operator_only
def sleep() -> ResponseReturnValue:
    """Hold the worker for ``seconds``: shows harakiri, graceful stops and worker fan-out."""
    raw = request.args.get("seconds", "1")
    try:
        seconds = float(raw)
    except ValueError:
        raise ApiError(400, "invalid_request", "seconds must be a number", {"seconds": raw}) from None
    if not 0 <= seconds <= MAX_SLEEP:
        raise ApiError(400, "invalid_request", f"seconds must be from 0 to {MAX_SLEEP:g}")
    time.sleep(seconds)
    return jsonify(slept=seconds, pid=os.getpid())


MAX_CPU_N = 10_000_000
MAX_ENQUEUE_COUNT = 5000


def _whole_number(name: str, default: str, highest: int) -> int:
    raw = request.args.get(name, default)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 1 <= value <= highest:
        raise ApiError(
            400, "invalid_request", f"{name} must be a whole number from 1 to {highest}", {name: raw}
        )
    return value


@bp.get("/cpu")
@operator_only
def cpu() -> ResponseReturnValue:
    """A fixed amount of pure-Python work (``n`` iterations), never a time: a thread waiting for
    the GIL must not count as working. Shows what the GIL does to threads on CPU work."""
    n = _whole_number("n", "100000", MAX_CPU_N)
    return jsonify(n=n, sum=sum(i * i for i in range(n)), pid=os.getpid())


@bp.post("/enqueue")
@operator_only
def enqueue() -> ResponseReturnValue:
    """Enqueue ``count`` jobs of ``task`` (default diag.noop) on ``backend``, timing each call:
    the in-process cost of ``enqueue``, without HTTP (``batch=true``: one ``enqueue_many``).
    Returns the per-call times in microseconds and how many a full queue refused."""
    count = _whole_number("count", "100", MAX_ENQUEUE_COUNT)
    task = request.args.get("task", "diag.noop")
    backend = request.args.get("backend") or None
    jobs = current_jobs()
    if request.args.get("batch") == "true":
        # One enqueue_many call: its cost per job, once for each job.
        started = time.perf_counter()
        jobs.enqueue_many(task, [{}] * count, backend=backend)
        each = round((time.perf_counter() - started) * 1e6 / count, 1)
        return jsonify(count=count, refused=0, micros=[each] * count)
    micros = []
    refused = 0
    for _ in range(count):
        started = time.perf_counter()
        try:
            jobs.enqueue(task, {}, backend=backend)
        except QueueFull:
            refused += 1  # a full mule queue: the job is recorded as failed
            continue
        micros.append(round((time.perf_counter() - started) * 1e6, 1))
    return jsonify(count=count, refused=refused, micros=micros)
