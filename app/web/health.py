"""Liveness and readiness probes."""

from __future__ import annotations

import os
import sqlite3
import tempfile

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from app.jobs import current_jobs

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process answers: nothing else is checked."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """200 when the spool directory is writable and the database answers, else 503 with why."""
    settings = current_app.config["SETTINGS"]
    problems = {}
    try:
        with tempfile.NamedTemporaryFile(dir=settings.spool_dir, prefix=".ready-"):
            pass
    except OSError as exc:
        problems["spool_dir"] = f"{settings.spool_dir} is not writable: {exc.strerror}"
    try:
        current_jobs().db.ping()
    except sqlite3.Error as exc:
        problems["database"] = f"{settings.database_path}: {exc}"
    if problems:
        return jsonify(status="unavailable", problems=problems), 503
    return jsonify(status="ready", pid=os.getpid())
