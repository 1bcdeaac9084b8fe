"""The job store's schema, as the migrations that build it: ``PRAGMA user_version`` counts those
a database has run, so a new one reaches existing databases. Append; never edit a shipped one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema (IF NOT EXISTS: databases made before versions were counted have it).
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        task TEXT NOT NULL,
        args TEXT NOT NULL,
        backend TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        timeout REAL,
        result TEXT,
        error TEXT,
        progress REAL,
        progress_message TEXT,
        request_id TEXT,
        unique_key TEXT UNIQUE,
        dispatch TEXT,
        run_at REAL,
        pid INTEGER,
        deadline REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at DESC, id DESC);
    CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at DESC);
    CREATE INDEX IF NOT EXISTS jobs_by_task ON jobs (task, created_at DESC);
    CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    """,
    # 2: the backend's handle on a job (what only the backend reads), the owner of a running
    # attempt (node/run/pid: a pid alone repeats across restarts), and the readiness probe's row.
    """
    ALTER TABLE jobs RENAME COLUMN dispatch TO handle;
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    CREATE TABLE readiness (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at REAL NOT NULL,
        pid INTEGER NOT NULL
    );
    """,
    # 3: page views are the example's (app/examples/page_views.py keeps them in a file of its own);
    # the counts of the page-view demo start again from zero.
    """
    DROP TABLE counters;
    """,
    # 4: /metrics counts the records by task, backend and state in one GROUP BY: this covering
    # index makes it a scan of the index (10 ms for 100,000 records, 170 ms without it).
    """
    CREATE INDEX IF NOT EXISTS jobs_by_task_state ON jobs (task, backend, status);
    """,
    # 5: nodes sharing one store. Each live run of each node beats in ``nodes``; a job's ``node``
    # is the node holding its handover (its spool file, mule queue or thread pool), so that the
    # jobs of a dead node are found through ``jobs_by_node`` without a scan of the backlog.
    """
    CREATE TABLE nodes (
        node TEXT NOT NULL,
        run TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at REAL NOT NULL,
        beat_at REAL NOT NULL,
        PRIMARY KEY (node, run)
    );
    ALTER TABLE jobs ADD COLUMN node TEXT;
    CREATE INDEX jobs_by_node ON jobs (node, status);
    """,
    # 6: fewer index pages written per job (9 of the 11 pages a batch job's claim-and-success
    # wrote were in three indexes keyed by its state). Unfinished jobs by node, a small index (the
    # backlog), whose key a claim leaves as it is; finished ones' counts by task, backend and
    # state, which a job enters once, at its end, and a claim never touches.
    """
    DROP INDEX jobs_by_node;
    DROP INDEX jobs_by_task_state;
    CREATE INDEX jobs_unfinished ON jobs (node, task, backend)
        WHERE status = 'queued' OR status = 'scheduled' OR status = 'retrying' OR status = 'running';
    CREATE INDEX jobs_finished ON jobs (task, backend, status)
        WHERE status = 'succeeded' OR status = 'failed' OR status = 'cancelled';
    """,
)
