"""Who may use the operator endpoints (the jobs API, diagnostics).

With OPERATOR_TOKEN set, a request must carry ``Authorization: Bearer <token>``. Without it,
only loopback clients are allowed, as nginx reports them in REMOTE_ADDR: an operator on the
machine itself, never a visitor from the network. They must also name the machine as
localhost or a loopback address in Host, so that a web page in the operator's browser cannot
reach the API through DNS rebinding (its requests carry the page's own host name).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, request

from app.web.errors import ApiError

F = TypeVar("F", bound=Callable[..., Any])


LOCAL_NAMES = {"localhost", "127.0.0.1", "[::1]"}


def operator_allowed() -> bool:
    token = current_app.config["SETTINGS"].operator_token
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, supplied = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token.encode())
    return _loopback(request.remote_addr) and _local_host(request.host)


def _loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def _local_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOCAL_NAMES or (name.startswith("127.") and _loopback(name))


def operator_only(view: F) -> F:
    """Refuse the request with 401 (token set) or 403 (not loopback) unless it's an operator's."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not operator_allowed():
            if current_app.config["SETTINGS"].operator_token:
                raise ApiError(
                    401,
                    "unauthorized",
                    "send Authorization: Bearer <OPERATOR_TOKEN>",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            raise ApiError(403, "forbidden", "operator endpoints answer loopback clients only")
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]
