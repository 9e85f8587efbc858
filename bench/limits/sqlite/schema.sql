-- limit-sqlite: mirrors limit-postgres. state: 0 queued, 1 running, 2 completed.
CREATE TABLE IF NOT EXISTS jobs (
    id               INTEGER PRIMARY KEY,
    state            INTEGER NOT NULL DEFAULT 0,
    channel          TEXT    NOT NULL DEFAULT 'default',
    priority         INTEGER NOT NULL DEFAULT 0,
    run_at           REAL    NOT NULL,
    payload          TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    lease_token      TEXT,
    lease_expires_at REAL,
    created_at       REAL    NOT NULL,
    finished_at      REAL
);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (channel, priority, run_at, id) WHERE state = 0;
