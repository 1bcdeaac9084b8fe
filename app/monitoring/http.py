"""HTTP requests counted by route and status, timed, in the process that answered them; and,
under uWSGI, the worker's memory looked at every few requests (``recycle``)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, request

from app import runtime
from app.monitoring.metrics import HTTP_LATENCY, HTTP_REQUESTS
from app.monitoring.recycle import RssGuard

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
    from prometheus_client import Counter, Histogram

# Requests that matched no route (404s, probes of random paths) share one label: the raw path
# would make a new series per path a client invents.
UNMATCHED = "<unmatched>"
# The environ key holding when the request reached the app (time.perf_counter()).
STARTED = "app.request_started"


class _Children:
    """The labelled children of the HTTP metrics, looked up once per label set: prometheus's
    ``labels()`` validates and locks on every call, a dict lookup does not."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], Counter] = {}
        self.latencies: dict[str, Histogram] = {}

    def count(self, endpoint: str, method: str, status: int) -> Counter:
        key = (endpoint, method, status)
        child = self.counts.get(key)
        if child is None:
            child = self.counts[key] = HTTP_REQUESTS.labels(endpoint, method, str(status))
        return child

    def latency(self, endpoint: str) -> Histogram:
        child = self.latencies.get(endpoint)
        if child is None:
            child = self.latencies[endpoint] = HTTP_LATENCY.labels(endpoint)
        return child


def init_app(app: Flask) -> None:
    """Time every request and count its answer.

    The clock starts in a WSGI wrapper (a key of the environ) rather than a ``before_request``
    hook: Flask asks of every hook, on every request, whether it is a coroutine function, and
    the hook's ``g`` goes through a context proxy; the two hooks cost more than the counting."""
    children = _Children()
    uwsgi = runtime.uwsgi_module()
    guard = RssGuard(app.config["SETTINGS"].reload_on_rss, uwsgi) if uwsgi is not None else None
    flask_app = app.wsgi_app

    def timed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[STARTED] = time.perf_counter()
        return flask_app(environ, start_response)

    app.wsgi_app = timed  # type: ignore[method-assign]

    @app.after_request
    def count(response: Response) -> Response:
        rule = request.url_rule
        endpoint = rule.rule if rule is not None else UNMATCHED
        children.count(endpoint, request.method, response.status_code).inc()
        started = request.environ.get(STARTED)
        if started is not None:
            children.latency(endpoint).observe(time.perf_counter() - started)
        if guard is not None:
            guard.request_done()
        return response
