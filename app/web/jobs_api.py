"""The jobs API: enqueue, inspect, retry and cancel background jobs. Operators only.

Errors of the job layer become JSON answers in one place (``errors.JOB_ERROR_ANSWERS``)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from flask import Blueprint, jsonify, request, url_for
from flask.typing import ResponseReturnValue

from app.jobs import InvalidJob, JobStatus, current_jobs
from app.request_id import request_id
from app.web.auth import operator_only
from app.web.errors import ApiError

bp = Blueprint("jobs_api", __name__, url_prefix="/api")

ENQUEUE_FIELDS = {"task", "args", "backend", "delay", "max_attempts"}
MAX_LIMIT = 500


@bp.before_request
@operator_only
def require_operator() -> None:
    """Every endpoint here is an operator's."""


def json_body() -> dict[str, Any]:
    """The request's JSON object; 415 if it is not JSON, 400 if it is malformed or not an object."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "the body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    return body


@bp.post("/jobs")
def enqueue() -> ResponseReturnValue:
    """Enqueue a job; the job layer checks its fields (400 with every problem, by field)."""
    body = json_body()
    jobs = current_jobs()
    fields: dict[str, Any] = {name: body.get(name) for name in ENQUEUE_FIELDS}
    unknown = {name: "unknown field" for name in body.keys() - ENQUEUE_FIELDS}
    if unknown:
        # Refused whatever else it says; the answer lists the other fields' problems too.
        raise InvalidJob("the job is not valid", {**unknown, **jobs.option_problems(**fields)})
    job = jobs.enqueue(
        fields["task"],
        fields["args"],
        backend=fields["backend"],
        delay=fields["delay"],
        max_attempts=fields["max_attempts"],
        request_id=request_id(),
    )
    response = jsonify(job.to_dict())
    response.status_code = 202
    response.headers["Location"] = url_for("jobs_api.show", job_id=job.id)
    return response


@bp.get("/jobs")
def index() -> ResponseReturnValue:
    status = request.args.get("status") or None
    task = request.args.get("task") or None
    details = {}
    if status is not None and status not in list(JobStatus):
        details["status"] = f"must be one of {', '.join(JobStatus)}"
    try:
        limit = int(request.args.get("limit", "50"))
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError
    except ValueError:
        details["limit"] = f"must be a whole number from 1 to {MAX_LIMIT}"
        limit = 0
    before = None
    if request.args.get("cursor"):
        try:
            stamp, _, job_id = base64.urlsafe_b64decode(request.args["cursor"]).decode().partition(":")
            before = (float(stamp), job_id)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            details["cursor"] = "is not a cursor this API returned"
    if details:
        raise ApiError(400, "validation_failed", "invalid query", details)
    page = current_jobs().list(
        status=JobStatus(status) if status else None, task=task, limit=limit, before=before
    )
    next_cursor = None
    if len(page) == limit:
        last = page[-1]
        next_cursor = base64.urlsafe_b64encode(f"{last.created_at!r}:{last.id}".encode()).decode()
    return jsonify(jobs=[job.to_dict() for job in page], next_cursor=next_cursor)


@bp.get("/jobs/<job_id>")
def show(job_id: str) -> ResponseReturnValue:
    return jsonify(current_jobs().get(job_id).to_dict())


@bp.post("/jobs/<job_id>/retry")
def retry(job_id: str) -> ResponseReturnValue:
    return jsonify(current_jobs().retry(job_id).to_dict()), 202


@bp.delete("/jobs/<job_id>")
def cancel(job_id: str) -> ResponseReturnValue:
    return jsonify(current_jobs().cancel(job_id).to_dict())


@bp.get("/tasks")
def tasks() -> ResponseReturnValue:
    return jsonify(tasks=[task.describe() for task in current_jobs().tasks()])
