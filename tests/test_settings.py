"""Settings are read once from the environment and a bad one stops start-up in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import PROJECT_ROOT, Settings, SettingsError, usable_cpus


def test_defaults_fit_the_machine(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "d")})
    assert settings.processes == max(2, 2 * usable_cpus())
    assert settings.http_port == 8080 and settings.stats_port == 9191
    assert settings.listen_backlog <= int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert (tmp_path / "d").is_dir()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PROCESSES", "many"),
        ("PROCESSES", "0"),
        ("THREADS", "2.5"),
        ("HTTP_PORT", "70000"),
        ("MAX_BODY_SIZE", "ten megs"),
        ("LISTEN_BACKLOG", "10000000"),
        ("JOBS_DIAG", "perhaps"),
        ("JOBS_IMPORT", "not a module"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}: "):
        Settings.from_env({name: value})


def test_a_directory_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SettingsError, match=r"^DATA_DIR: cannot create directory"):
        Settings.from_env({"DATA_DIR": str(blocker / "data")})


@pytest.mark.parametrize(
    "command", [["-m", "app.serve"], ["-m", "app.serve", "uwsgi"], ["-c", "import app.wsgi"]]
)
def test_start_up_stops_with_one_line_on_a_bad_setting(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PROCESSES": "lots"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["configuration error: PROCESSES: expected a whole number from 1 to 256, got 'lots'"]


def test_the_readme_lists_every_setting_as_the_code_defines_it() -> None:
    from app.launcher.settings_table import settings_table

    assert settings_table() in (PROJECT_ROOT / "README.md").read_text()
