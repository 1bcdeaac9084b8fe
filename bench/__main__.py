"""``python -m bench [--quick] [--only TABLE ...]``: run the tables, write bench/results."""

from __future__ import annotations

import argparse
import sys
from types import ModuleType
from typing import Any

from bench import http_servers, jobs, memory, targets, threads
from bench.config import Config, Progress
from bench.load import COMMANDS
from bench.procs import stop_all
from bench.report import machine, plot, results_dir, stamp, versions, write

TABLES: dict[str, tuple[str, ModuleType]] = {
    "http": ("HTTP: this stack, gunicorn and bare uWSGI behind nginx", http_servers),
    "threads": ("Threads or processes?", threads),
    "jobs": ("Jobs: this stack's spooler and mule beside RQ, Celery, Dramatiq and Huey", jobs),
    "memory": ("Memory: PSS per process", memory),
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (make bench-quick)")
    parser.add_argument("--only", nargs="*", choices=list(TABLES), help="run only these tables")
    options = parser.parse_args()
    config = Config.make(options.quick)
    progress = Progress()
    names = options.only or list(TABLES)
    into = results_dir(config.quick)
    results: dict[str, Any] = {
        "meta": {
            "date": stamp(),
            "quick": config.quick,
            "config": config.__dict__,
            "command": "make bench-quick" if config.quick else "make bench",
            "machine": machine(),
            "versions": versions(),
        }
    }
    sections = []
    try:
        for name in names:
            title, module = TABLES[name]
            results[name] = module.run(config, progress)
            picture = plot(name, module.plot, results[name], into)
            sections.append((title, module.markdown(results[name]), picture))
            write(results, sections, COMMANDS, into)
    finally:
        stop_all()
    if sections:
        results["targets"] = targets.check(results)
        sections.insert(0, ("Targets (issue 11)", targets.markdown(results), ""))
    path = write(results, sections, COMMANDS, into)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
