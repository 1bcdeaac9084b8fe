"""HTTP requests counted by route and status, timed, in the process that answered them."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request

from app.monitoring.metrics import HTTP_LATENCY, HTTP_REQUESTS

# Requests that matched no route (404s, probes of random paths) share one label: the raw path
# would make a new series per path a client invents.
UNMATCHED = "<unmatched>"


def init_app(app: Flask) -> None:
    """Time every request and count its answer."""

    @app.before_request
    def start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule is not None else UNMATCHED
        HTTP_REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        started = g.get("request_started")
        if started is not None:
            HTTP_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        return response
