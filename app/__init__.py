"""A Flask application made to run under uWSGI behind nginx, with background jobs."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app import runtime
from app.settings import Settings


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; raises ``SettingsError`` when a setting is unusable."""
    from app import cli, web
    from app.jobs import Jobs

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)
    jobs = Jobs(app, settings, local_mode=app.config.get("JOBS_LOCAL_MODE"))
    jobs.db.migrate()
    web.register(app)
    cli.register(app)
    if runtime.process_role() == "master":
        jobs.install_uwsgi_hooks()
    return app
