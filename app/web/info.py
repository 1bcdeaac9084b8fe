"""The landing page and /api/info: which host, node and uWSGI worker answered, and how it is configured."""

from __future__ import annotations

import contextlib
import os
import socket
import threading

from flask import Blueprint, current_app, jsonify, render_template
from flask.typing import ResponseReturnValue

from app import runtime
from app.examples.page_views import page_views
from app.jobs import JobError, current_jobs
from app.request_id import request_id

bp = Blueprint("info", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    # Fire and forget on a mule: the page records the job but never waits for the counting,
    # and a full queue or a lost count leaves the page as it is.
    with contextlib.suppress(JobError):
        current_jobs().enqueue("examples.count_page_view", {"page": "index"}, request_id=request_id())
    return render_template("index.html", views=page_views().views("index"))


@bp.get("/api/info")
def api_info() -> ResponseReturnValue:
    settings = current_app.config["SETTINGS"]
    uwsgi = runtime.uwsgi_module()
    return jsonify(
        host=socket.gethostname(),
        node=current_jobs().node,
        pid=os.getpid(),
        worker_id=uwsgi.worker_id() if uwsgi else None,
        processes=settings.processes,
        threads=settings.threads,
        thread=threading.current_thread().name,
        uwsgi_version=uwsgi.version.decode() if uwsgi else None,
        server="uwsgi" if uwsgi else "local",
    )
