"""bench/results: latest.md (the tables, the machine, the versions, the commands), latest.json
and a PNG plot per table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import PROJECT_PYTHON, ROOT

RESULTS = ROOT / "bench" / "results"
# A quick run's results stay out of git: they would replace the committed full run's.
QUICK_RESULTS = ROOT / "var" / "bench" / "results-quick"
PEERS = ("flask", "gunicorn", "celery", "kombu", "redis", "rq", "dramatiq", "huey", "matplotlib")


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"


def machine() -> dict[str, Any]:
    """Cores, memory, kernel and load: what the figures depend on."""
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    model = [
        line.split(":", 1)[1].strip()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("model name")
    ]
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": model[0] if model else platform.processor(),
        "memory_gb": round(int(meminfo[1]) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
    }


def versions() -> dict[str, str]:
    """Every server, peer and tool measured, as installed."""
    found = {name: metadata.version(name) for name in PEERS}
    project = subprocess.run(
        [str(PROJECT_PYTHON), "-c", "import sys, flask; print(sys.version.split()[0], flask.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    uwsgi = _first_line([str(PROJECT_PYTHON.parent / "uwsgi"), "--version"])
    found.update(
        {
            "python": platform.python_version(),
            "stack python": project[0] if project else "?",
            "pyuwsgi (uWSGI)": uwsgi,
            "nginx": _first_line(["nginx", "-v"]).replace("nginx version: ", ""),
            "wrk": _first_line(["wrk", "--version"]).split(" [")[0],
            "redis-server": _first_line(["redis-server", "--version"]),
        }
    )
    return found


def results_dir(quick: bool) -> Path:
    """Where a run writes: bench/results for a full run, var/bench/results-quick for a quick one."""
    return QUICK_RESULTS if quick else RESULTS


def write(
    results: dict[str, Any], sections: list[tuple[str, str, str]], commands: list[str], into: Path
) -> Path:
    """Write latest.json and latest.md; ``sections`` are (title, markdown, plot file) per table."""
    into.mkdir(parents=True, exist_ok=True)
    (into / "latest.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    meta = results["meta"]
    lines = [
        f"# Benchmark results ({'quick run' if meta['quick'] else 'full run'}, {meta['date']})",
        "",
        f"Reproduce with `{meta['command']}`; the exact load commands are at the end. "
        "One run, one machine: compare the ratios within this run, not absolute figures across machines.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in meta["machine"].items()],
        "",
        "## Versions",
        "",
        *[f"- {key}: {value}" for key, value in meta["versions"].items()],
        "",
    ]
    for title, body, plot in sections:
        lines += [f"## {title}", "", body, ""]
        if plot:
            lines += [f"![{title}]({plot})", ""]
    lines += ["## Commands", "", "```", *commands, "```", ""]
    path = into / "latest.md"
    path.write_text("\n".join(lines))
    return path


def plot(name: str, draw: Any, result: dict[str, Any], into: Path) -> str:
    """Draw one table with ``draw(result, axes)`` into a small PNG; returns its file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 3.6), dpi=80)
    draw(result, axes)
    figure.tight_layout()
    file = f"{name}.png"
    into.mkdir(parents=True, exist_ok=True)
    figure.savefig(into / file)
    plt.close(figure)
    return file


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
