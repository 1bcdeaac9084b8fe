"""The job layer's own measurements, kept by whichever process runs the job.

Under uWSGI, prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the
launcher) writes them to a file per process, so /metrics sums every spooler, mule and worker.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# From a millisecond no-op to a long export; queue waits share them (a retry waits its backoff).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

JOB_DURATION = Histogram(
    "job_duration_seconds",
    "How long a job's attempt ran, by task and backend",
    ["task", "backend"],
    buckets=SECONDS_BUCKETS,
)
JOB_QUEUE_WAIT = Histogram(
    "job_queue_wait_seconds",
    "From the time a job was due (enqueued, its delay or its retry's backoff passed) to its start",
    ["task", "backend"],
    buckets=SECONDS_BUCKETS,
)
JOBS_FINISHED = Counter(
    "jobs_finished",
    "Jobs that ended, by task, backend and final status (succeeded or failed)",
    ["task", "backend", "status"],
)
JOB_RETRIES = Counter("jobs_retries", "Failed attempts followed by another one, by task", ["task"])
MULE_MESSAGES = Counter("mule_messages", "Messages a mule handled, by mule id", ["mule"])
