"""Settings are read once from the environment and a bad one stops start-up in one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from app.launcher.nginx import render_nginx
from app.launcher.settings_docs import compose_header, compose_table, native_table
from app.settings import COMPOSE_ONLY, PROJECT_ROOT, SETTINGS, Settings, SettingsError, usable_cpus


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
        ("NODE_NAME", "host/1"),
        ("NODE_NAME", "-leading-dash"),
        ("NODE_TIMEOUT", "1"),
        ("LOG_LEVEL", "verbose"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=rf"^{name}: "):
        Settings.from_env({name: value})


def test_log_level_is_read_in_any_case(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "LOG_LEVEL": " warning "})
    assert settings.log_level == "WARNING"
    assert Settings.from_env({"DATA_DIR": str(tmp_path)}).log_level == "INFO"


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


def generated_block(text: str, form: str) -> str:
    """The text between the markers of ``python -m app.serve settings --format FORM``."""
    begin = re.escape(f"<!-- BEGIN generated: python -m app.serve settings --format {form} -->")
    match = re.search(rf"{begin}\n(.*?)\n<!-- END generated -->", text, re.DOTALL)
    assert match, f"README.md has no generated block for --format {form}"
    return match.group(1)


@pytest.mark.parametrize(("form", "generate"), [("native", native_table), ("compose", compose_table)])
def test_each_readme_settings_table_is_exactly_the_declarations(
    form: str, generate: Callable[[], str]
) -> None:
    assert generated_block((PROJECT_ROOT / "README.md").read_text(), form) == generate()


def test_the_compose_table_gives_compose_defaults_and_what_the_image_fixes() -> None:
    rows = {row.split(" | ")[0].strip("| `"): row for row in compose_table().splitlines()[2:]}
    assert "`0.0.0.0`" in rows["HTTP_HOST"]
    assert "`/data`, fixed by the image" in rows["DATA_DIR"]
    assert "QUEUE_TIMEOUT" in rows and "JOBS_LOCAL_MODE" not in rows


@pytest.mark.parametrize("form", ["native", "compose"])
def test_the_settings_command_prints_the_readme_table_for_copy_paste(form: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.serve", "settings", "--format", form],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.rstrip("\n") == generated_block((PROJECT_ROOT / "README.md").read_text(), form)


def compose_file() -> str:
    """docker-compose.yml, then what Compose reads with it: docker-compose.override.yml, the
    replicas' and Swarm's override files."""
    files = ("docker-compose.yml", "docker-compose.override.yml", "docker/replicas.yml", "docker/swarm.yml")
    return "\n".join((PROJECT_ROOT / name).read_text() for name in files)


def test_the_compose_header_is_generated_from_the_declarations() -> None:
    header = compose_file().split("\nservices:")[0].rstrip("\n")
    assert header[header.index("# Settings come from") :] == compose_header()


def app_service_environment() -> list[tuple[str, str]]:
    """The app service's ``environment:`` entries, in order, as (name, value)."""
    app = compose_file().split("\n  app:\n", 1)[1].split("\n  nginx:\n", 1)[0]
    block = app.split("\n    environment:\n", 1)[1]
    entries = []
    for line in block.splitlines():
        if not line.startswith("      "):
            break
        if not line.strip().startswith("#"):
            name, value = line.strip().split(": ", 1)
            entries.append((name, value))
    return entries


def test_compose_passes_each_declared_app_setting_through_and_no_other() -> None:
    passed = [name for name, setting in SETTINGS.items() if setting.compose and setting.compose.passed]
    assert app_service_environment() == [(name, f"${{{name}:-}}") for name in passed]


def test_every_compose_variable_is_declared_with_the_default_compose_gives_it() -> None:
    used = re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", compose_file())
    declared = {**{n: s.compose for n, s in SETTINGS.items() if s.compose}, **COMPOSE_ONLY}
    for name, default in used:
        compose = declared.get(name)
        assert compose is not None, f"{name} is used by docker-compose.yml but not declared for Compose"
        if compose.default is not None:
            assert default == compose.default, name
        else:
            # Passed through: empty means the app's default; a default Compose spells out must agree.
            assert compose.passed and default in ("", SETTINGS[name].raw_default()), name
    assert {name for name, _ in used} >= {n for n, c in declared.items() if c.passed or c.default is not None}


def test_the_image_fixes_exactly_the_settings_declared_as_fixed_by_it() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", "\n".join(re.findall(r"^ENV (.*)$", dockerfile, re.M))))
    fixed = {n: s.compose.image for n, s in SETTINGS.items() if s.compose and s.compose.image is not None}
    assert {name: value for name, value in env.items() if name in SETTINGS} == fixed
    assert f"ARG PYTHON_IMAGE={COMPOSE_ONLY['PYTHON_IMAGE'].default}" in dockerfile


@pytest.mark.parametrize("harakiri", ["", "42"])
def test_the_nginx_container_waits_for_uwsgi_as_long_as_the_settings_say(harakiri: str) -> None:
    script = PROJECT_ROOT / "docker/nginx/entrypoint.d/15-upstream-timeout.envsh"
    shell = shutil.which("sh")
    assert shell
    result = subprocess.run(
        [shell, "-c", f'. "{script}"; echo "$UPSTREAM_TIMEOUT"'],
        env={"PATH": os.environ["PATH"], "HARAKIRI": harakiri},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(result.stdout) == Settings.from_env({"HARAKIRI": harakiri}).upstream_timeout


def test_derived_values_are_properties_of_the_settings(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "HARAKIRI": "42", "JOBS_RETENTION_DAYS": "3"})
    assert settings.upstream_timeout == 47
    assert settings.media_dir == tmp_path / "media"
    assert settings.thumbs_dir == tmp_path / "media" / "thumbs"
    assert settings.uploads_dir == tmp_path / "uploads"
    assert settings.purge_cutoff(1_000_000.0) == 1_000_000.0 - 3 * 86400
    assert settings.purge_cutoff(1_000_000.0, older_than_days=0.5) == 1_000_000.0 - 43200


def test_the_native_nginx_waits_upstream_timeout_and_serves_media_dir(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path / "data"), "RUN_DIR": str(tmp_path / "run"), "HARAKIRI": "42"}
    )
    conf = (render_nginx(settings, "nginx").parent / "app.conf").read_text()
    assert f"uwsgi_read_timeout {settings.upstream_timeout}s;" in conf
    assert f"alias {settings.media_dir}/;" in conf
