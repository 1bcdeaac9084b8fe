"""The web layer: blueprints for pages, health, the jobs API and diagnostics."""

from __future__ import annotations

from flask import Flask

from app.web import diag, errors, examples, health, info, jobs_api, monitoring


def register(app: Flask) -> None:
    errors.register(app)
    app.register_blueprint(info.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(jobs_api.bp)
    app.register_blueprint(examples.bp)
    app.register_blueprint(monitoring.bp)
    if app.config["SETTINGS"].jobs_diag:
        app.register_blueprint(diag.bp)
