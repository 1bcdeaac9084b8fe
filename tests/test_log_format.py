"""The app's JSON log line, formatted without a request or a server."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from app.monitoring.logs import JsonFormatter


def record(created: float) -> logging.LogRecord:
    line = logging.LogRecord("app.jobs.runner", logging.INFO, "f.py", 1, "job %s done", ("j1",), None)
    line.created = created
    line.job_id = "j1"
    return line


def test_a_line_is_one_json_object_with_utc_time_to_the_millisecond_and_its_extras() -> None:
    formatter = JsonFormatter()
    for created in (1795516793.0, 1795516793.0456, 1795516793.999, 1795516793.9999996, 1795516794.5):
        line = json.loads(formatter.format(record(created)))
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert line["time"] == expected
        assert line["msg"] == "job j1 done" and line["job_id"] == "j1" and line["level"] == "INFO"
