"""How much to measure: the full run (``make bench``) or the quick one (``make bench-quick``)."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    quick: bool
    repeats: int  # each case, reported as median with min-max
    seconds: float  # one closed- or open-loop HTTP run
    connections: int  # wrk's connections
    jobs: int  # no-op jobs per job-queue case
    wait_seconds: float  # each constant-rate queue-wait run

    @classmethod
    def make(cls, quick: bool) -> Config:
        if quick:
            return cls(quick, repeats=1, seconds=2, connections=32, jobs=2000, wait_seconds=3)
        return cls(quick, repeats=3, seconds=5, connections=32, jobs=10_000, wait_seconds=10)


class Progress:
    """One line per case on stderr: which table, which case, how far along the run is."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, table: str, step: int, steps: int, what: str) -> None:
        elapsed = time.monotonic() - self.start
        print(f"[{elapsed:6.0f} s] {table} {step}/{steps}: {what}", file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict[str, float]:
    """Median with min and max: how every repeated figure is reported."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt(stat: dict[str, float], digits: int = 0) -> str:
    """``median (min-max)``, or the one value when there was one run."""
    if stat["min"] == stat["max"]:
        return f"{stat['median']:,.{digits}f}"
    return f"{stat['median']:,.{digits}f} ({stat['min']:,.{digits}f}-{stat['max']:,.{digits}f})"
