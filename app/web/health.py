"""Liveness and readiness probes."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from app.db import DATABASE_ERRORS
from app.jobs import current_jobs

bp = Blueprint("health", __name__)

# Below this much free space in DATA_DIR or SPOOL_DIR a job may not be recordable or spoolable:
# say "not ready" before enqueues start failing. Small: a job takes a few KB.
MIN_FREE_BYTES = 1024 * 1024


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process answers: nothing else is checked."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """200 when a job can be accepted: room on both disks, a writable spool directory and a
    database that commits a write; else 503 with the reasons."""
    settings = current_app.config["SETTINGS"]
    problems = {}
    for name, directory in (("data_dir", settings.data_dir), ("spool_dir", settings.spool_dir)):
        problem = space_problem(directory)
        if problem:
            problems[name] = problem
    try:
        with tempfile.NamedTemporaryFile(dir=settings.spool_dir, prefix=".ready-"):
            pass
    except OSError as exc:
        problems["spool_dir"] = f"{settings.spool_dir} is not writable: {exc.strerror}"
    try:
        current_jobs().record_readiness()
    except DATABASE_ERRORS as exc:
        problems["database"] = f"{settings.database_location} cannot commit a write: {exc}"
    if problems:
        return jsonify(status="unavailable", problems=problems), 503, {"Retry-After": "5"}
    return jsonify(status="ready", pid=os.getpid())


def space_problem(directory: Path) -> str | None:
    """Why ``directory``'s disk cannot take a job, or None."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        return f"{directory}: {exc.strerror}"
    if free < MIN_FREE_BYTES:
        return f"{directory} has {free} bytes free, below the {MIN_FREE_BYTES} a job needs"
    return None
