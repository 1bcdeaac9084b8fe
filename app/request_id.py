"""The request's X-Request-ID: recorded on the jobs a request enqueues, and on its log lines."""

from __future__ import annotations

import re

from flask import request

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id() -> str | None:
    """The X-Request-ID nginx passed on: short and plain, or None (no log or JSON injection)."""
    supplied = request.headers.get("X-Request-ID", "")
    return supplied if REQUEST_ID.fullmatch(supplied) else None
