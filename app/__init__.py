"""A Flask application made to run under uWSGI behind nginx, with background jobs."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.settings import Settings


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; raises ``SettingsError`` when a setting is unusable."""
    from app import cli, examples, web
    from app.jobs import Jobs
    from app.monitoring import http

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)
    examples.init_app(app, settings)
    Jobs(app, settings, task_modules=task_modules(settings), local_mode=app.config.get("JOBS_LOCAL_MODE"))
    web.register(app)
    http.init_app(app)
    cli.register(app)
    return app


def task_modules(settings: Settings) -> list[str]:
    """The modules whose decorators declare the app's tasks: the examples, the diagnostic tasks
    unless JOBS_DIAG=false, and the operator's (JOBS_IMPORT)."""
    diag = ["app.jobs.diag"] if settings.jobs_diag else []
    return ["app.examples.tasks", *diag, *settings.jobs_import]
