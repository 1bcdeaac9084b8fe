"""The web layer through Flask's test client: health, info, errors, operator protection."""

from __future__ import annotations

import shutil
import socket
import sqlite3

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.jobs import Jobs
from tests.conftest import AppFactory


def test_healthz_answers_json(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_spool_and_database_are(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ready"


def test_readyz_says_why_when_the_spool_directory_is_gone(app: Flask, client: FlaskClient) -> None:
    shutil.rmtree(app.config["SETTINGS"].spool_dir)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "spool_dir" in response.get_json()["problems"]


def test_info_reports_the_configuration_outside_uwsgi(client: FlaskClient) -> None:
    info = client.get("/api/info").get_json()
    assert info["server"] == "local" and info["worker_id"] is None
    assert info["processes"] >= 1 and info["threads"] >= 1
    assert info["host"] == socket.gethostname() and info["node"] == socket.gethostname()


def test_info_names_the_node_that_answered(app_factory: AppFactory) -> None:
    info = app_factory(NODE_NAME="replica-2").test_client().get("/api/info").get_json()
    assert info["node"] == "replica-2" and info["host"] == socket.gethostname()


def test_landing_page_links_to_the_endpoints(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    for link in ("/healthz", "/readyz", "/api/info"):
        assert f'href="{link}"' in page


def test_unknown_paths_and_methods_answer_json(client: FlaskClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    wrong = client.put("/healthz")
    assert wrong.status_code == 405 and "message" in wrong.get_json()


def test_operator_endpoints_refuse_a_client_from_the_network(client: FlaskClient) -> None:
    response = client.get("/api/jobs", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert client.get("/api/jobs", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200


def test_a_loopback_client_naming_a_foreign_host_is_refused(client: FlaskClient) -> None:
    """A page in the operator's browser reaching the API through DNS rebinding."""
    response = client.get(
        "/api/jobs", environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers={"Host": "evil.example:8080"}
    )
    assert response.status_code == 403
    for host in ("localhost:8080", "127.0.0.1", "[::1]:8080"):
        allowed = client.get("/api/jobs", environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers={"Host": host})
        assert allowed.status_code == 200, host


def test_a_database_error_is_a_503_with_a_json_body(
    client: FlaskClient, jobs: Jobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        locked = sqlite3.OperationalError("database is locked")
        locked.sqlite_errorcode = sqlite3.SQLITE_BUSY  # as SQLite sets it; a bare error is a bug (500)
        raise locked

    monkeypatch.setattr(jobs.store.db, "connection", broken)
    response = client.get("/api/jobs")
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"


def test_with_a_token_only_its_bearer_is_an_operator(app_factory: AppFactory) -> None:
    guarded = app_factory(OPERATOR_TOKEN="s3cret").test_client()
    refused = guarded.get("/api/tasks")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert guarded.get("/api/tasks", headers={"Authorization": "Bearer \u00e9t\u00e9"}).status_code == 401
    assert guarded.get("/api/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/api/tasks", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_each_view_of_the_landing_page_is_counted_by_the_example_job(client: FlaskClient) -> None:
    # The mule job runs inline here, before the page reads the count.
    assert "viewed 1 times" in client.get("/").get_data(as_text=True)
    assert "viewed 2 times" in client.get("/").get_data(as_text=True)
