"""Hostile input: oversized or malformed requests get a JSON 4xx, from nginx or the app, never a 5xx.

Requests that ``requests`` cannot express (a bad request line, thousands of header lines) are
sent raw, over a socket, to the real nginx in front of the real uWSGI."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from app.launcher.nginx import find_nginx
from app.web.errors import MAX_JSON_DEPTH
from tests.conftest import TOKEN, Stack, free_port, wait_until


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> str:
        """The ``error`` code of a JSON error body."""
        assert self.headers.get("content-type") == "application/json", (self.status, self.body[:200])
        code: str = json.loads(self.body)["error"]
        return code


def send_raw(port: int, request: bytes) -> Answer:
    """Send ``request`` as it is and read the answer until nginx closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # nginx may answer and close before it has read all of an oversized request.
        with contextlib.suppress(OSError):
            sock.sendall(request)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 "), f"no HTTP answer: {head[:200]!r}"
    headers = dict(line.split(": ", 1) for line in header_lines)
    return Answer(int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body)


def get(path: str = "/api/info", headers: bytes = b"") -> bytes:
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + headers + b"\r\n"
    )


def post_json(body: bytes, path: str = "/api/jobs") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# name: (request, the status expected). MAX_BODY_SIZE is 256k in the shared stack.
HOSTILE_REQUESTS: dict[str, tuple[bytes, int]] = {
    "a 40 KB cookie": (get(headers=b"Cookie: session=" + b"c" * 40_000 + b"\r\n"), 431),
    "40 KB of headers, past uWSGI's old 32 KB buffer": (
        get(headers=b"".join(b"X-Large-%d: %s\r\n" % (i, b"v" * 4_000) for i in range(10))),
        431,
    ),
    "2,000 small headers": (get(headers=b"".join(b"X-Small-%d: 1\r\n" % i for i in range(2_000))), 431),
    "a 100 KB URI": (get("/api/" + "u" * 100_000), 414),
    "a 17 KB URI, past uWSGI's old buffer once repeated": (get("/nope/" + "u" * 17_000), 404),
    "a JSON body nested 100,000 deep": (post_json(nested(100_000)), 400),
    "a large flat JSON body": (
        post_json(json.dumps({"task": "hostile.unknown", "args": list(range(30_000))}).encode()),
        404,
    ),
    "a missing file under /media/": (get("/media/nope"), 404),
    "a bad method in the request line": (b"G@T / HTTP/1.1\r\nHost: localhost\r\n\r\n", 400),
    "bytes that are not HTTP": (b"\x00\x01\x02 \xff\r\n\r\n", 400),
    "a body over MAX_BODY_SIZE": (post_json(b"[" + b"0," * 150_000 + b"0]"), 413),
}


@pytest.mark.parametrize("name", HOSTILE_REQUESTS)
@pytest.mark.faults
@pytest.mark.integration
def test_a_hostile_request_gets_a_json_4xx(stack: Stack, name: str) -> None:
    request, expected = HOSTILE_REQUESTS[name]
    answer = send_raw(stack.http_port, request)
    assert answer.status == expected, (answer.status, answer.body[:300])
    assert answer.error()
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert len(answer.headers["x-request-id"]) == 32


@pytest.mark.faults
@pytest.mark.integration
def test_the_hostile_set_never_reaches_a_5xx(stack: Stack, figure: Callable[[str], None]) -> None:
    statuses = Counter(send_raw(stack.http_port, request).status for request, _ in HOSTILE_REQUESTS.values())
    server_errors = sum(count for status, count in statuses.items() if status >= 500)
    figure(f"hostile={sum(statuses.values())} 5xx={server_errors} statuses={dict(sorted(statuses.items()))}")
    assert server_errors == 0
    assert "invalid request block size" not in stack.logs()
    assert "max vec size" not in stack.logs()


@dataclass
class SecondNginx:
    port: int
    log_path: Path


@pytest.fixture
def uncapped_nginx(stack: Stack, tmp_path: Path) -> Iterator[SecondNginx]:
    """A second nginx in front of the shared stack's uWSGI, with the stack's configuration but no
    cap on the number of header lines (Debian's nginx has max_headers 1000, the official image's
    nginx no such directive), so that only header bytes bound what reaches uWSGI."""
    nginx = find_nginx()
    assert nginx is not None
    conf_dir = stack.root / "run" / "nginx"
    second = SecondNginx(free_port(), tmp_path / "nginx.log")
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / sub).mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text((conf_dir / "nginx.conf").read_text().replace(str(conf_dir), str(tmp_path)))
    listen = f"listen 127.0.0.1:{stack.http_port};"
    app_conf = (conf_dir / "app.conf").read_text()
    assert listen in app_conf
    for cap in ("max_headers 1000000;", ""):
        (tmp_path / "app.conf").write_text(app_conf.replace(listen, f"listen 127.0.0.1:{second.port}; {cap}"))
        if subprocess.run([nginx, "-t", "-c", str(main)], capture_output=True, check=False).returncode == 0:
            break
    with second.log_path.open("wb") as log:
        process = subprocess.Popen([nginx, "-c", str(main)], stdout=log, stderr=log)
    try:
        wait_until(lambda: _accepts(second.port), timeout=10, what="the second nginx to listen")
        yield second
    finally:
        process.terminate()
        process.wait(timeout=10)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.mark.faults
@pytest.mark.integration
def test_the_largest_header_nginx_accepts_fits_uwsgi(
    uncapped_nginx: SecondNginx, stack: Stack, figure: Callable[[str], None]
) -> None:
    """The worst case of the arithmetic in app.conf.template: the shortest header lines ("a:" and
    a newline, 3 bytes, each a 10-byte variable) give the most packet bytes per request byte."""

    def answer(lines: int) -> Answer:
        return send_raw(uncapped_nginx.port, b"GET /api/info HTTP/1.0\n" + b"a:\n" * lines + b"\n")

    accepted, refused = 1, 20_000
    while refused - accepted > 1:
        middle = (accepted + refused) // 2
        status = answer(middle).status
        assert status in (200, 431), status
        accepted, refused = (middle, refused) if status == 200 else (accepted, middle)
    assert answer(accepted).status == 200
    assert answer(refused).error() == "headers_too_large"
    assert "invalid request block size" not in stack.logs()
    assert "too big" not in uncapped_nginx.log_path.read_text()
    figure(
        f"largest accepted header: {accepted} lines of 3 bytes -> 200, {10 * accepted} bytes of "
        "uwsgi variables for them (limit 65,535); one line more -> 431"
    )


@pytest.mark.integration
def test_real_world_headers_are_served(stack: Stack) -> None:
    headers = {
        "Cookie": "session=" + "s" * 16_376,
        "Authorization": "Bearer " + "eyJhbGciOiJSUzI1NiJ9." + "p" * 1_200 + ".signature",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        "Accept-Language": "en-GB,en;q=0.9,fr;q=0.8",
    }
    assert len(headers["Cookie"]) == 16 * 1024
    answer = stack.session.get(stack.url("/api/info"), headers=headers, timeout=30)
    assert answer.status_code == 200


@pytest.mark.integration
@pytest.mark.parametrize(
    ("request_bytes", "status", "error"),
    [
        (b"TRACE / HTTP/1.1\r\nHost: localhost\r\n\r\n", 405, "method_not_allowed"),
        (b"POST / HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "not_implemented"),
        (b"GET / HTTP/2.5\r\nHost: localhost\r\n\r\n", 505, "http_version_not_supported"),
        (get("/_nginx/error"), 404, "not_found"),
    ],
)
def test_every_error_nginx_answers_itself_is_json(
    stack: Stack, request_bytes: bytes, status: int, error: str
) -> None:
    answer = send_raw(stack.http_port, request_bytes)
    assert (answer.status, answer.error()) == (status, error)
    assert answer.headers["x-frame-options"] == "DENY"


def test_a_json_body_as_deep_as_the_limit_is_accepted(client: FlaskClient) -> None:
    args = json.loads(nested(MAX_JSON_DEPTH - 1))
    response = client.post("/api/jobs", json={"task": "diag.noop", "args": args})
    assert response.status_code == 202, response.get_json()


def test_a_json_body_one_level_deeper_gets_400(client: FlaskClient) -> None:
    args = json.loads(nested(MAX_JSON_DEPTH))
    response = client.post("/api/jobs", json={"task": "diag.noop", "args": args})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_json"
    assert str(MAX_JSON_DEPTH) in response.get_json()["message"]
