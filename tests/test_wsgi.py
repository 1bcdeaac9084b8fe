"""The WSGI module uWSGI loads in its master before forking the workers."""

from __future__ import annotations

import importlib.abc
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from app import runtime
from app.settings import PROJECT_ROOT


def test_what_the_master_loaded_is_frozen_out_of_the_garbage_collectors_reach(tmp_path: Path) -> None:
    """Forked workers share the master's pages until something writes to them; a collection
    in a worker wrote to every object it traversed (a worker's PSS went from 10.8 to 22.4 MB,
    bench's memory table). After ``import app.wsgi`` the loaded objects are frozen."""
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "SPOOL_DIR": str(tmp_path / "spool"),
        "RUN_DIR": str(tmp_path / "run"),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import gc, app.wsgi; print(gc.get_freeze_count(), gc.get_count()[0])"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    frozen, young = map(int, result.stdout.split())
    assert frozen > 10_000  # the app, Flask, the drivers: tens of thousands of objects
    assert young < 100  # nothing left in the youngest generation to collect


def test_outside_uwsgi_asking_for_the_uwsgi_module_does_not_search_the_import_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under gunicorn or ``flask run`` there is no ``uwsgi`` module; a failed import is not
    remembered, so ``import uwsgi`` searched all of sys.path on each call, 2-3 times a request:
    about 90 us of gunicorn's 260 us per ``GET /api/info`` in the bench, a handicap to the peer."""
    searched: list[str] = []

    class Recorder(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, *_: object) -> None:
            searched.append(name)

    monkeypatch.setattr(sys, "meta_path", [Recorder(), *sys.meta_path])
    monkeypatch.delitem(sys.modules, "uwsgi", raising=False)
    assert runtime.uwsgi_module() is None
    assert searched == []
    # Under uWSGI its module is in sys.modules before the app loads: that is what is returned.
    embedded = types.ModuleType("uwsgi")
    monkeypatch.setitem(sys.modules, "uwsgi", embedded)
    assert runtime.uwsgi_module() is embedded
