"""Hostile input: oversized or malformed requests get a JSON 4xx, from nginx or the app, never a 5xx."""

from __future__ import annotations

import json

from flask.testing import FlaskClient

from app.web.errors import MAX_JSON_DEPTH


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


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
