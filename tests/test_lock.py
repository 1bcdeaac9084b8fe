"""The lock files: every install (make, the Dockerfile, offline-images.sh) reads exact versions
with hashes from requirements/, written by `make lock` from pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"
# One locked package: "name==version \" then its "--hash=sha256:..." lines.
ENTRY = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\\n((?:    --hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", re.M
)


def locked(path: Path) -> dict[str, str]:
    """The lock's versions by canonical name; fails on a line that is neither an entry nor a comment."""
    text = path.read_text()
    entries: dict[str, str] = {canonicalize_name(m[1]): m[2] for m in ENTRY.finditer(text)}
    stray = [
        line
        for line in ENTRY.sub("", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert not stray, f"{path.name}: lines without a pinned version and hashes: {stray}"
    return entries


def declared(*extras: str) -> dict[str, str]:
    """pyproject.toml's direct dependencies (and those of ``extras``) as name to pinned version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [
        spec for extra in extras for spec in project["optional-dependencies"][extra]
    ]
    pins: dict[str, str] = {}
    for spec in specs:
        requirement = Requirement(spec)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"pyproject.toml pins exact versions: {spec}"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


@pytest.mark.parametrize(("lock", "extras"), [(RUNTIME_LOCK, ()), (DEV_LOCK, ("dev",))])
def test_each_lock_pins_every_declared_dependency_at_its_declared_version_with_hashes(
    lock: Path, extras: tuple[str, ...]
) -> None:
    versions = locked(lock)
    for name, version in declared(*extras).items():
        assert versions.get(name) == version, f"{lock.name}: {name} is not locked at {version}: run make lock"


def test_the_runtime_lock_holds_only_runtime_packages_and_the_dev_lock_the_same_versions() -> None:
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    assert not {"pytest", "pip-tools"} & set(runtime)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_the_dev_lock_pins_the_build_tools_the_editable_install_uses() -> None:
    assert {"pip", "setuptools"} <= set(locked(DEV_LOCK))


def test_the_bench_lock_installs_every_runtime_pin_at_its_version() -> None:
    # gunicorn and the peers import the app itself: a runtime dependency missing from the bench
    # environment stops `make bench` at its first table.
    bench = locked(ROOT / "bench" / "requirements.txt")
    missing = {name: version for name, version in locked(RUNTIME_LOCK).items() if bench.get(name) != version}
    assert not missing, f"bench/requirements.txt lacks these runtime pins (run make bench-lock): {missing}"
