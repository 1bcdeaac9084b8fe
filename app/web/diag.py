"""Diagnostic endpoints for tests and benchmarks: operator-only, off with JOBS_DIAG=false."""

from __future__ import annotations

import os
import time

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

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
