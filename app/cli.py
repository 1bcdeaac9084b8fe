"""Operator commands: ``flask --app app.wsgi jobs list|show|retry|cancel|purge``."""

from __future__ import annotations

import json

import click
from flask import Flask
from flask.cli import AppGroup

from app.jobs import JobError, JobStatus, current_jobs

jobs_cli = AppGroup("jobs", help="Inspect and manage background jobs.")


@jobs_cli.command("list")
@click.option("--status", type=click.Choice([status.value for status in JobStatus]))
@click.option("--task")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
def list_jobs(status: str | None, task: str | None, limit: int) -> None:
    """The newest jobs, one line each."""
    chosen = JobStatus(status) if status else None
    for job in current_jobs().list(status=chosen, task=task, limit=limit):
        created = job.to_dict()["created_at"]
        click.echo(f"{job.id}  {job.status:<9}  {job.attempts}/{job.max_attempts}  {created}  {job.task}")


@jobs_cli.command("show")
@click.argument("job_id")
def show(job_id: str) -> None:
    """One job's whole record, as JSON."""
    try:
        click.echo(json.dumps(current_jobs().get(job_id).to_dict(), indent=2))
    except JobError as exc:
        raise click.ClickException(str(exc)) from None


@jobs_cli.command("retry")
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Run a failed or cancelled job again."""
    try:
        job = current_jobs().retry(job_id)
    except JobError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{job.id} {job.status}")


@jobs_cli.command("cancel")
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job that has not started."""
    try:
        job = current_jobs().cancel(job_id)
    except JobError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{job.id} {job.status}")


@jobs_cli.command("purge")
@click.option("--older-than-days", type=click.FloatRange(0), help="default: JOBS_RETENTION_DAYS")
def purge(older_than_days: float | None) -> None:
    """Delete finished job records older than the retention."""
    click.echo(f"purged {current_jobs().purge(older_than_days)} job records")


def register(app: Flask) -> None:
    app.cli.add_command(jobs_cli)
