"""The app's log lines as JSON, one object per line, each naming its request id.

A line written while a request is handled carries that request's id (nginx's X-Request-ID); a
line written while a job runs, in whichever process, carries the job's id and the id of the
request that enqueued it. So ``grep <request id>`` follows one click from nginx's access log to
the last job it caused.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from flask import has_request_context

from app.jobs.context import logged_job
from app.request_id import request_id

# LogRecord attributes that are not extra fields of a line.
STANDARD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RequestContext(logging.Filter):
    """Adds ``request_id`` (and ``job_id`` inside a job) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = logged_job()
        if job is not None:
            # A job id given with the line (a job enqueued by this one) is the line's own.
            if not hasattr(record, "job_id"):
                record.job_id = job.id
            record.request_id = job.request_id
        elif has_request_context():
            record.request_id = request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, pid, message, extras, traceback."""

    # One encoder for every line (json.dumps with options builds a new one per call), and the
    # time's text up to the second kept for the next lines of that second.
    _encode = json.JSONEncoder(default=str, separators=(",", ":")).encode
    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in STANDARD_FIELDS})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return self._encode(line)

    def _time(self, created: float) -> str:
        """``created`` as ISO 8601 in UTC to the millisecond, e.g. 2026-11-24T10:48:46.123+00:00."""
        micros = round(created * 1e6)  # as datetime rounds it
        second = micros // 1_000_000
        if self._second[0] != second:
            self._second = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        return f"{self._second[1]}.{micros // 1000 % 1000:03d}+00:00"


def configure_logging(level: int | str = logging.INFO) -> None:
    """Send the root logger's records of ``level`` and above (a number, or a name such as
    "WARNING") to stdout as JSON lines (uWSGI passes them on unchanged)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestContext())
    logging.basicConfig(level=level, handlers=[handler], force=True)
