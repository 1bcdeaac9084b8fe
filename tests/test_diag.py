"""The diagnostic endpoints the benchmarks drive (bench/): fixed CPU work and timed enqueues."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient


def test_cpu_does_a_fixed_count_of_iterations(client: FlaskClient) -> None:
    answer = client.get("/api/diag/cpu?n=1000")
    assert answer.status_code == 200
    assert answer.get_json()["n"] == 1000
    assert answer.get_json()["sum"] == sum(i * i for i in range(1000))


@pytest.mark.parametrize("query", ["n=0", "n=abc", "n=10000001"])
def test_cpu_refuses_a_bad_count_with_a_json_400(client: FlaskClient, query: str) -> None:
    answer = client.get(f"/api/diag/cpu?{query}")
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_request"


def test_enqueue_records_every_job_and_times_each_call(client: FlaskClient) -> None:
    answer = client.post("/api/diag/enqueue?count=5")
    assert answer.status_code == 200
    body = answer.get_json()
    assert (body["count"], body["refused"], len(body["micros"])) == (5, 0, 5)
    assert all(micros > 0 for micros in body["micros"])
    listed = client.get("/api/jobs?task=diag.noop&status=succeeded").get_json()["jobs"]
    assert len(listed) == 5


def test_enqueue_refuses_a_bad_count_with_a_json_400(client: FlaskClient) -> None:
    answer = client.post("/api/diag/enqueue?count=0")
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_request"


def test_diag_endpoints_are_operator_only(client: FlaskClient) -> None:
    remote = {"REMOTE_ADDR": "203.0.113.9"}
    assert client.get("/api/diag/cpu", environ_base=remote).status_code in (401, 403)
    assert client.post("/api/diag/enqueue", environ_base=remote).status_code in (401, 403)
