"""The job store's share of an enqueue: median time of ``jobs.enqueue("diag.noop")`` on the
spooler backend, uWSGI's spool() replaced by a no-op, over a fresh database.

    .venv/bin/python scripts/enqueue_cost.py [CALLS] [DATABASE_URL]

Without a DATABASE_URL the store is SQLite in a temporary DATA_DIR (the default)."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from app import create_app
from app.jobs import current_jobs
from app.jobs.backends.spooler import SpoolerBackend
from app.settings import Settings


class NoSpooler:
    """uwsgi.spool that writes no file: the enqueue's cost without the spool file's."""

    def spool(self, message: dict[bytes, bytes]) -> bytes:
        return b"/nonexistent/spool-file"


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    url = sys.argv[2] if len(sys.argv) > 2 else ""
    with tempfile.TemporaryDirectory() as root:
        env = {name: str(Path(root) / name.lower()) for name in ("DATA_DIR", "SPOOL_DIR", "RUN_DIR")}
        env["JOBS_LOCAL_MODE"] = "inline"
        if url:
            env["DATABASE_URL"] = url
        app = create_app(Settings.from_env(env), {"TESTING": True})
        with app.app_context():
            jobs = current_jobs()
            jobs.backends["spooler"] = SpoolerBackend(NoSpooler(), Path(root), jobs.store)  # type: ignore[arg-type]
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                jobs.enqueue("diag.noop", backend="spooler")
                times.append(time.perf_counter() - started)
    times.sort()
    print(
        f"{calls} enqueues: median {statistics.median(times) * 1000:.3f} ms,"
        f" p90 {times[int(len(times) * 0.9)] * 1000:.3f} ms"
    )


if __name__ == "__main__":
    main()
