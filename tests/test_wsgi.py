"""The WSGI module uWSGI loads in its master before forking the workers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
