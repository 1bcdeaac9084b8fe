"""The issue's targets, each with the figure this run measured beside it, met or not."""

from __future__ import annotations

from typing import Any

from bench.http_servers import STACK, STACK_UWSGI
from bench.jobs import SPOOLER, SPOOLER_ALONE, SPOOLER_BATCH, SPOOLER_INFO


def check(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for every target whose table ran."""
    found: list[tuple[str, str, bool]] = []
    if "http" in results:
        rows = results["http"]["rows"]
        # Judged as the issue compares them: every server behind the same nginx (STACK_UWSGI);
        # the whole stack, its own nginx configuration included, beside it.
        for name, label in ((STACK_UWSGI, "same nginx"), (STACK, "whole stack, its own nginx")):
            if name not in rows:
                continue
            row = rows[name]
            measured = f"{row['vs_gunicorn_sync']:.2f}x"
            if "minimal_vs_gunicorn_sync" in results["http"]:
                ceiling = results["http"]["minimal_vs_gunicorn_sync"]
                measured += f" (the ceiling, a minimal Flask app on bare uWSGI: {ceiling:.2f}x)"
            found.append(
                (f"HTTP peak >= 2.5x gunicorn sync ({label})", measured, row["vs_gunicorn_sync"] >= 2.5)
            )
            found.append(
                (
                    f"production configuration >= 90% of bare uWSGI ({label})",
                    f"{row['vs_bare_uwsgi']:.0%}",
                    row["vs_bare_uwsgi"] >= 0.9,
                )
            )
    if "jobs" in results:
        rows = results["jobs"]["rows"]
        spooler = rows[SPOOLER]
        p50 = spooler["enqueue_us_p50"] / 1000
        measured = f"{p50:.3f} ms"
        if SPOOLER_INFO in rows:
            default = rows[SPOOLER_INFO]["enqueue_us_p50"] / 1000
            measured += f" (at LOG_LEVEL=INFO, the default: {default:.3f} ms)"
        if SPOOLER_ALONE in rows:
            alone = rows[SPOOLER_ALONE]["enqueue_us_p50"] / 1000
            measured += f"; one enqueue per request, its own spool file: {alone:.3f} ms"
        found.append(("spooler enqueue with its record, in-process, median <= 0.3 ms", measured, p50 <= 0.3))
        if SPOOLER_BATCH in rows:
            per_job = rows[SPOOLER_BATCH]["enqueue_us_p50"] / 1000
            found.append(("the same, enqueue_many (per job)", f"{per_job:.3f} ms", per_job <= 0.3))
        ours = {
            name: row["end_to_end_rate"]
            for name, row in rows.items()
            if name.startswith("this stack: spooler")
        }
        peers = {
            name: row["end_to_end_rate"] for name, row in rows.items() if not name.startswith("this stack")
        }
        best_peer = max(peers, key=peers.__getitem__)
        best_ours = max(ours, key=ours.__getitem__)
        found.append(
            (
                "spooler end to end ahead of every peer",
                f"{ours[best_ours]:,.0f} jobs/s ({best_ours}) vs {peers[best_peer]:,.0f} ({best_peer}); "
                f"one enqueue a call: {ours[SPOOLER]:,.0f}",
                ours[best_ours] > peers[best_peer],
            )
        )
        waits = results["jobs"]["stack_waits"]
        for case, limit in (
            ("200/s, idle", 1.0),
            ("1000/s, idle", 50.0),
            ("200/s, HTTP workers saturated", 1000.0),
        ):
            if case in waits:
                p99 = waits[case]["p99_ms"]
                found.append((f"queue wait p99 <= {limit:g} ms at {case}", f"{p99:,.2f} ms", p99 <= limit))
    return found


def markdown(results: dict[str, Any]) -> str:
    lines = ["| target | measured (this run) | met |", "|---|---|---|"]
    for target, measured, met in check(results):
        lines.append(f"| {target} | {measured} | {'yes' if met else '**no**'} |")
    return "\n".join(lines)
