"""/metrics, /api/stats and the dashboard.

The data is for operators only, like the jobs API. The dashboard's page holds none: a browser
cannot send a bearer token when it loads a page, so the page asks for the token and its script
sends it with each call (without OPERATOR_TOKEN, loopback clients need none).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from app.jobs import JobStatus, current_jobs
from app.monitoring.metrics import process_totals, scrape
from app.monitoring.uwsgi_stats import mule_pids, read_stats, sanitized, spool_backlog
from app.web.auth import operator_only

bp = Blueprint("monitoring", __name__)


@bp.get("/metrics")
@operator_only
def metrics() -> ResponseReturnValue:
    """The whole stack's metrics in the Prometheus text format."""
    body = scrape(current_app.config["SETTINGS"], current_jobs().store)
    # 0.0.4: the text format every Prometheus reads (Debian's 2.42 included); the names fit it.
    return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)


@bp.get("/api/stats")
@operator_only
def stats() -> ResponseReturnValue:
    """uWSGI's stats without what is secret, with the spool backlog, mules, job records, the
    heartbeats of the nodes sharing the job store, and totals."""
    settings = current_app.config["SETTINGS"]
    body: dict[str, Any] = {"uwsgi": None, "mules": {"configured": settings.mules, "alive": None}}
    try:
        raw = read_stats(settings.stats_host, settings.stats_port)
    except (OSError, ValueError):
        raw = None
    if raw is not None:
        body["uwsgi"] = sanitized(raw)
        pids = mule_pids(raw)
        body["mules"].update(alive=len(pids), pids=pids)
    backlog = spool_backlog(settings.spool_dir)
    running = sum(s["running"] or 0 for s in body["uwsgi"]["spoolers"]) if body["uwsgi"] else None
    body["spool"] = {"pending": backlog.due, "scheduled": backlog.later, "running": running}
    jobs: dict[str, dict[str, int]] = {}
    for task, backend, status, count in current_jobs().store.counts():
        by_state = jobs.setdefault(task, {})
        by_state[status] = by_state.get(status, 0) + count
        if backend == "mule" and status == "queued":
            body["mules"]["queued"] = body["mules"].get("queued", 0) + count
    body["mules"].setdefault("queued", 0)
    body["jobs"] = jobs
    body["nodes"] = current_jobs().nodes()
    body["totals"] = process_totals()
    return jsonify(body)


@bp.get("/dashboard")
def dashboard() -> ResponseReturnValue:
    """The live page: its script polls /api/stats and the jobs API every 2 s."""
    return render_template("dashboard.html", states=list(JobStatus))
