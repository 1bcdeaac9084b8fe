"""Every error is a JSON body with a message: never an HTML page, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Request, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, InternalServerError

from app.db import DATABASE_ERRORS, is_busy, is_transient
from app.jobs import InvalidJob, JobConflict, JobError, JobNotFound, QueueFull, UnknownTask

log = logging.getLogger(__name__)

# Far below Python's recursion limit (1000), which every later dump or load of a body's values
# (the job store, the spool file, the answer) shares with the frames of Flask and uWSGI.
MAX_JSON_DEPTH = 100


class ApiError(Exception):
    """An error answer: HTTP status, a machine-readable code, a message and field details."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return body


# The HTTP status and error code of each error of the job layer (app/jobs/errors.py); an error
# takes the entry of its nearest listed class, and any other JobError is a job not queued.
JOB_ERROR_ANSWERS: dict[type[JobError], tuple[int, str]] = {
    JobNotFound: (404, "not_found"),
    UnknownTask: (404, "unknown_task"),
    InvalidJob: (400, "validation_failed"),
    JobConflict: (409, "conflict"),
    QueueFull: (503, "queue_full"),
    JobError: (503, "not_queued"),
}


def as_api_error(exc: JobError) -> ApiError:
    """The HTTP answer to an error of the job layer, from ``JOB_ERROR_ANSWERS``."""
    status, code = next(JOB_ERROR_ANSWERS[cls] for cls in type(exc).__mro__ if cls in JOB_ERROR_ANSWERS)
    details = exc.details if isinstance(exc, InvalidJob) else None
    # A 503 is "not now": say when to try again, as the other 503s of the stack do.
    headers = {"Retry-After": "1"} if status == 503 else None
    return ApiError(status, code, str(exc), details, headers)


def nests_deeper_than(value: object, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels deep (no recursion)."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(limit):
        if not level:
            return False  # shallower than the limit: no need to go on counting levels
        level = [
            child
            for container in level
            for child in (container.values() if isinstance(container, dict) else container)
            if isinstance(child, (dict, list))
        ]
    return bool(level)


class BoundedJSONRequest(Request):
    """A request whose JSON body nests too deeply gets a 400, not a RecursionError's 500."""

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The JSON body, as Flask parses it; raises ApiError 400 beyond MAX_JSON_DEPTH levels."""
        too_deep = ApiError(400, "invalid_json", f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            body = super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise too_deep from None
        if nests_deeper_than(body, MAX_JSON_DEPTH):
            raise too_deep
        return body


def register(app: Flask) -> None:
    app.request_class = BoundedJSONRequest

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> ResponseReturnValue:
        return jsonify(error_body(exc.code, exc.message, exc.details)), exc.status, exc.headers

    @app.errorhandler(JobError)
    def job_error(exc: JobError) -> ResponseReturnValue:
        return api_error(as_api_error(exc))

    def database_error(exc: Exception) -> ResponseReturnValue:
        # Busy, locked or a full disk pass: 503, try again. Anything else (a missing column,
        # a bad statement) is a bug that retrying cannot fix: 500, logged with its traceback.
        if not is_transient(exc):
            log.exception("database error")
            return jsonify(error_body("internal_error", InternalServerError.description)), 500
        log.error("database unavailable: %s", exc)
        body = error_body("database_unavailable", f"the database cannot take this now ({exc}); try again")
        return jsonify(body), 503, {"Retry-After": "1" if is_busy(exc) else "10"}

    # SQLite's and psycopg's errors share no base class: one handler for each.
    for error_class in DATABASE_ERRORS:
        app.register_error_handler(error_class, database_error)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = jsonify(error_body(code, exc.description or exc.name))
        response.status_code = exc.code or 500
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if exc.get_response().headers.get(header):
                response.headers[header] = exc.get_response().headers[header]
        return response

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception) -> ResponseReturnValue:
        log.exception("unhandled error")
        body = error_body("internal_error", InternalServerError.description)
        return jsonify(body), 500
