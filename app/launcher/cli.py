"""The launcher's commands: ``python -m app.serve [run|uwsgi|check|nginx-conf|healthcheck|reload|settings]``.

Every command but ``settings`` validates the settings first and stops with one line naming the
variable when one is bad. ``run`` and ``uwsgi`` also refuse, before touching anything, to start
on directories another stack uses or on ports another program holds.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NoReturn

import click
import psycopg

from app.db import PostgresDatabase
from app.launcher import fifo, probe, supervise
from app.launcher.lock import StackRunning, lock_directories
from app.launcher.master import exec_uwsgi
from app.launcher.nginx import INSTALL_HINT, check_nginx_conf, find_nginx, render_nginx
from app.launcher.ports import check_ports_free
from app.launcher.private import PRIVATE_UMASK, make_private
from app.launcher.settings_docs import FORMATS
from app.monitoring.metrics import reset_metrics_dir
from app.settings import Settings, SettingsError

EXIT_CODES = (
    "Exit status: 0 done; 1 a server died or did not start, or the stack is unhealthy; "
    "2 a bad setting or a busy port; 3 nginx is missing or rejects its configuration; "
    "4 another stack uses these directories; 5 the database (DATABASE_URL) cannot be reached."
)


def refuse(message: str, exit_code: int) -> NoReturn:
    """Stop with one line on stderr and the exit status that says its kind."""
    click.echo(message, err=True)
    sys.exit(exit_code)


@click.group(
    invoke_without_command=True,
    epilog=EXIT_CODES,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Run and operate the stack: nginx in front of uWSGI. Without a command: run."""
    # What uWSGI, the app and nginx create (database, spool files, media) is this user's only.
    os.umask(PRIVATE_UMASK)
    if ctx.invoked_subcommand is None:
        ctx.invoke(run)


@main.command()
def run() -> None:
    """uWSGI and nginx in the foreground (make run); Ctrl-C or SIGTERM stops both gracefully."""
    settings = _settings()
    nginx = find_nginx()
    if nginx is None:
        refuse(INSTALL_HINT, 3)
    _check_database(settings)
    keep_fds = _claim(settings, with_nginx=True)
    conf = render_nginx(settings, nginx)
    if not check_nginx_conf(nginx, conf):
        refuse(f"nginx rejected {conf}", 3)
    sys.exit(supervise.run(settings, nginx, conf, keep_fds))


@main.command()
def uwsgi() -> None:
    """Replace this process with the uWSGI master (the container's command)."""
    settings = _settings()
    _check_database(settings)
    exec_uwsgi(settings, _claim(settings, with_nginx=False))


@main.command()
def check() -> None:
    """Validate the settings and print them as uWSGI will see them (the secrets masked)."""
    for key, value in _settings().shown_env().items():
        click.echo(f"{key}={value}")


@main.command("nginx-conf")
def nginx_conf() -> None:
    """Render the native nginx configuration under RUN_DIR/nginx and print its path."""
    click.echo(render_nginx(_settings(), find_nginx() or "nginx"))


@main.command()
def healthcheck() -> None:
    """GET /healthz straight from uWSGI's socket (the container's health check); 0 when 200."""
    sys.exit(probe.healthcheck(_settings()))


@main.command()
def reload() -> None:
    """Reload every worker gracefully, through the uWSGI master FIFO in RUN_DIR."""
    sys.exit(fifo.reload(_settings()))


@main.command("settings")
@click.option(
    "--format",
    "form",
    type=click.Choice(list(FORMATS)),
    default="native",
    show_default=True,
    help="native: README's Settings table; compose: its Compose settings table; "
    "compose-header: docker-compose.yml's header comment.",
)
def settings_command(form: str) -> None:
    """Print every setting, its default and its meaning, as the README or docker-compose.yml shows them."""
    click.echo(FORMATS[form]())


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        refuse(f"configuration error: {exc}", 2)


def _check_database(settings: Settings) -> None:
    """Stop with one line naming PostgreSQL's host:port (never the password) if DATABASE_URL is
    set and the database does not answer within DATABASE_WAIT seconds, or refuses the login:
    better than workers that all fail their first query."""
    if not settings.database_url:
        return
    db = PostgresDatabase(settings.database_url, password=settings.database_password)
    deadline = time.monotonic() + settings.database_wait
    waiting = False
    while True:
        try:
            db.connect().close()
            return
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())
            # The server answered (a bad password, an unknown database: libpq's "FATAL:" lines,
            # which carry no SQLSTATE at connect): waiting will not change that. No answer
            # (refused, unresolved, timed out) may change once the database has started.
            answered = exc.sqlstate is not None or "FATAL:" in reason
            if answered or time.monotonic() >= deadline:
                refuse(f"database error: DATABASE_URL: cannot connect to {db.describe()}: {reason}", 5)
            if not waiting:
                click.echo(
                    f"waiting up to {settings.database_wait} s for the database at {db.describe()}: {reason}",
                    err=True,
                )
                waiting = True
            time.sleep(1)


def _claim(settings: Settings, with_nginx: bool) -> tuple[int, ...]:
    """Lock the directories, check the ports, tighten file modes, start the metrics from zero;
    the lock's descriptors to pass on."""
    holder = {
        "pid": os.getpid(),
        "http": f"http://{settings.http_host}:{settings.http_port}/" if with_nginx else None,
        "stats": f"{settings.stats_host}:{settings.stats_port}",
    }
    try:
        keep_fds = lock_directories(settings, holder)
        check_ports_free(settings, with_nginx)
    except StackRunning as exc:
        refuse(str(exc), 4)
    except SettingsError as exc:
        refuse(f"configuration error: {exc}", 2)
    make_private(settings)
    # Here, as the stack starts, and never on a reload: counters must not go backwards meanwhile.
    reset_metrics_dir(settings.run_dir)
    return keep_fds
