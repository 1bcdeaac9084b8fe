"""``python -m bench.ab [--rounds N] [--jobs N] [--wait-seconds S] A B``: the job layer's figures
under two configurations of the stack, on fresh stacks in turn.

A and B are settings as ``NAME=value`` words (environment variables of the stack, e.g.
``"SPOOLER_NICE=0"``; ``""`` for the defaults); a code change can be tried behind a variable of
its own. Each configuration gets two fresh stacks, in the order A B B A, so that a drift of the
machine (ext4's recently deleted inodes, a neighbour's load) falls on both. Each stack runs
ROUNDS rounds of JOBS spooler no-ops enqueued inside requests (the jobs table's in-process case),
then POSTs jobs at 200 a second for SECONDS; each line printed is one round, and the last two
lines each configuration's medians. One configuration is not better than the other unless its
figures are apart across all the stacks: on a shared 2-core machine, one round is not a result."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from bench.config import fmt, spread
from bench.jobs import StackJobs
from bench.procs import stop_all

NAME = re.compile(r"[A-Z][A-Z0-9_]*")
RATE = 200
ENQUEUE = "enqueue p50 (us)"
END_TO_END = "end to end (jobs/s)"
WAIT = f"queue wait p99 at {RATE}/s (ms)"


def settings(words: str) -> dict[str, str]:
    """``"NAME=value NAME2=value"`` as StackJobs' keyword settings; SystemExit on a bad word."""
    found = {}
    for word in words.split():
        name, sep, value = word.partition("=")
        if not sep or not NAME.fullmatch(name):
            raise SystemExit(f"bench.ab: {word!r} is not NAME=value (NAME in capitals)")
        found[name.lower()] = value
    return found


def one_stack(label: str, config: dict[str, str], args: argparse.Namespace) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {ENQUEUE: [], END_TO_END: [], WAIT: []}
    jobs = StackJobs(f"ab-{label.lower()}", **config)
    try:
        jobs.stack.start()
        jobs.in_process("spooler", 20)  # every worker's connection open
        for round_ in range(args.rounds):
            run: dict[str, Any] = jobs.in_process("spooler", args.jobs)
            figures[ENQUEUE].append(run["enqueue_us_p50"])
            figures[END_TO_END].append(run["end_to_end_rate"])
            print(
                f"{label} round {round_ + 1}: enqueue p50 {run['enqueue_us_p50']:,.0f} us,"
                f" p99 {run['enqueue_us_p99']:,.0f} us; end to end {run['end_to_end_rate']:,.0f} jobs/s",
                flush=True,
            )
        if args.wait_seconds > 0:
            wait = jobs.constant_rate(RATE, args.wait_seconds, busy=False)
            figures[WAIT].append(wait["p99_ms"])
            print(
                f"{label} at {RATE}/s: queue wait p50 {wait['p50_ms']:.2f} ms, p99 {wait['p99_ms']:.2f} ms",
                flush=True,
            )
    finally:
        jobs.stack.server.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("a", help='settings A, e.g. "" (the defaults)')
    parser.add_argument("b", help='settings B, e.g. "SPOOLER_NICE=0"')
    parser.add_argument("--rounds", type=int, default=3, help="rounds of JOBS per stack (3)")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs a round (10,000)")
    parser.add_argument(
        "--wait-seconds", type=float, default=10, help=f"seconds at {RATE} jobs/s (10; 0: none)"
    )
    args = parser.parse_args(argv)
    configs = {"A": settings(args.a), "B": settings(args.b)}
    totals: dict[str, dict[str, list[float]]] = {label: {} for label in configs}
    try:
        for label in ("A", "B", "B", "A"):
            for key, values in one_stack(label, configs[label], args).items():
                totals[label].setdefault(key, []).extend(values)
    finally:
        stop_all()
    for label, figures in totals.items():
        digits = {WAIT: 2}
        cells = "; ".join(
            f"{key} {fmt(spread(values), digits.get(key, 0))}" for key, values in figures.items() if values
        )
        given = (args.a if label == "A" else args.b) or "defaults"
        print(f"{label} ({given}): median {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
