"""``python -m bench.profile [JOBS]``: where the job layer's time goes, by py-spy.

Starts the stack as the jobs table does, records every uWSGI process (py-spy --subprocesses)
while JOBS spooler no-ops are enqueued inside requests and run, and prints the functions
that held the most samples, by process role. Raw stacks: var/bench/profile.txt."""

from __future__ import annotations

import collections
import subprocess
import sys
import time

from bench.jobs import StackJobs
from bench.procs import BENCH_BIN, SCRATCH


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    backend = sys.argv[2] if len(sys.argv) > 2 else "spooler"
    jobs = StackJobs()
    out = SCRATCH / "profile.txt"
    try:
        jobs.stack.start()
        SCRATCH.mkdir(parents=True, exist_ok=True)
        jobs.in_process(backend, 20)
        master = jobs.stack.pids()["master"][0]
        spy = subprocess.Popen(
            [str(BENCH_BIN / "py-spy"), "record", "--pid", str(master), "--subprocesses", "--rate", "500",
             "--format", "raw", "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)
        started = time.time()
        figures = jobs.in_process(backend, count)
        rate, p50 = figures["end_to_end_rate"], figures["enqueue_us_p50"]
        print(f"{count} {backend} jobs: {rate:.0f} jobs/s end to end, enqueue p50 {p50:.0f} us")
        print(f"run in {time.time() - started:.1f} s")
        spy.send_signal(2)
        spy.wait(timeout=60)
    finally:
        jobs.stack.server.stop()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        n = int(samples)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"{total} samples; own time:")
    for frame, n in own.most_common(25):
        print(f"{n / total:6.1%} {frame}")
    print("inclusive:")
    for frame, n in inclusive.most_common(40):
        print(f"{n / total:6.1%} {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
