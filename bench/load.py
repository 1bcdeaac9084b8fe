"""Load generators: wrk for closed-loop peaks, and a constant-rate driver for latency.

wrk runs with one thread (``-t1``): on two cores a second thread takes a core from the server.
wrk waits for each answer before its next request, so a stall slows the load instead of showing
up as latency; ``open_loop`` sends at fixed times instead and measures from the intended time.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

COMMANDS: list[str] = []  # every load command as run, for the results
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


@dataclass
class LoadResult:
    """What one load run measured: rate, counts and latency percentiles in milliseconds."""

    rate: float
    requests: int
    errors: int
    percentiles: dict[str, float] = field(default_factory=dict)
    offered: float | None = None


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, nearest rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _found(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in wrk's output; raises with the output if it is not there."""
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk's output has no {pattern!r}:\n{text}")
    return match.group(1)


def _ms(text: str) -> float:
    """A wrk duration ("850.00us", "1.20ms", "2.00s") in milliseconds."""
    number = _found(r"^([\d.]+)", text)
    return float(number) * _UNITS[text[len(number) :]]


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    script: Path | None = None,
) -> LoadResult:
    """A closed-loop run of ``wrk -t1``; non-2xx answers and socket errors count as errors."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    COMMANDS.append(shlex.join(command))
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rate = float(_found(r"Requests/sec:\s+([\d.]+)", out))
    requests = int(_found(r"(\d+) requests in", out))
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(n) for n in found.groups())
    percentiles = {
        f"p{p}": _ms(value) for p, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)\s*$", out, re.MULTILINE)
    }
    if "p99" not in percentiles:
        raise RuntimeError(f"wrk reported no latency distribution:\n{out}")
    return LoadResult(rate=rate, requests=requests, errors=errors, percentiles=percentiles)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, driver: _OpenLoop) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.intended = 0.0
        self.need: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, intended: float) -> None:
        self.intended = intended
        assert self.transport is not None
        self.transport.write(self.driver.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                found = re.search(rb"content-length:\s*(\d+)", head)
                self.status_ok = head[9:10] == b"2"
                self.need = end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < self.need:
                return
            self.buffer = self.buffer[self.need :]
            self.need = None
            self.driver.answered(self, self.status_ok)

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.lost(self)


class _OpenLoop:
    """Sends ``rate`` requests a second at fixed intended times over a pool of connections.

    A request due while every connection is busy waits for the next free one, and that wait
    counts in its latency (from the intended send time): no coordinated omission."""

    def __init__(self, host: str, port: int, request: bytes, rate: float, seconds: float) -> None:
        self.host, self.port, self.request = host, port, request
        self.rate, self.seconds = rate, seconds
        self.idle: collections.deque[_Connection] = collections.deque()
        self.due: collections.deque[float] = collections.deque()
        self.latencies: list[float] = []
        self.errors = 0
        self.sent = 0
        self.done: asyncio.Future[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.start = self.sending = 0.0

    async def run(self, connections: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()
        for _ in range(connections):
            _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
            self.idle.append(conn)
        total = int(self.rate * self.seconds)
        self.start = time.perf_counter()
        interval = 1.0 / self.rate
        while self.sent < total:
            now = time.perf_counter()
            while self.sent < total and self.start + self.sent * interval <= now:
                self._dispatch(self.start + self.sent * interval)
                self.sent += 1
            await asyncio.sleep(max(0.0, min(0.001, self.start + self.sent * interval - now)))
        self.sending = time.perf_counter() - self.start
        if len(self.latencies) + self.errors < total:
            await asyncio.wait_for(self.done, timeout=max(30.0, self.seconds * 3))

    def _dispatch(self, intended: float) -> None:
        if self.idle:
            self.idle.popleft().send(intended)
        else:
            self.due.append(intended)

    def answered(self, conn: _Connection, ok: bool) -> None:
        if ok:
            self.latencies.append((time.perf_counter() - conn.intended) * 1000)
        else:
            self.errors += 1
        if self.due:
            conn.send(self.due.popleft())
        else:
            self.idle.append(conn)
        self._check_done()

    def lost(self, conn: _Connection) -> None:
        if conn.need is not None or conn.intended:
            self.errors += 1
        self._check_done()

    def _check_done(self) -> None:
        total = int(self.rate * self.seconds)
        if self.done and not self.done.done() and len(self.latencies) + self.errors >= total:
            self.done.set_result(None)


def open_loop(
    host: str,
    port: int,
    path: str,
    *,
    rate: float,
    seconds: float,
    connections: int = 64,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Send ``rate`` requests/s for ``seconds`` at constant intended times; latency percentiles
    (p50, p99, p99.9, in ms) count from each request's intended send time. ``rate`` in the
    result is what the driver achieved to send; ``offered`` what was asked."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    COMMANDS.append(
        f"bench.load.open_loop {method} http://{host}:{port}{path} rate={rate:.0f}/s "
        f"seconds={seconds:g} connections={connections}"
    )
    driver = _OpenLoop(host, port, request, rate, seconds)
    asyncio.run(driver.run(connections))
    lat = driver.latencies
    return LoadResult(
        rate=driver.sent / max(driver.sending, 1e-9),
        requests=len(lat),
        errors=driver.errors,
        percentiles={"p50": percentile(lat, 50), "p99": percentile(lat, 99), "p99.9": percentile(lat, 99.9)},
        offered=rate,
    )
