-- conveyor's SQLite schema. Applied by SQLiteBackend.migrate(); every statement is
-- idempotent. Times are epoch seconds (REAL). JSON columns hold JSON text.
-- A column added to a table that already exists goes both here (new databases) and in
-- columns.sql (existing ones: CREATE TABLE IF NOT EXISTS leaves their table as it is).

CREATE TABLE IF NOT EXISTS conveyor_jobs (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids are handed out
    name               TEXT    NOT NULL,
    channel            TEXT    NOT NULL,
    payload            TEXT    NOT NULL,
    state              TEXT    NOT NULL CHECK (state IN ('scheduled', 'queued', 'running',
                                   'waiting', 'completed', 'failed', 'cancelled')),
    priority           INTEGER NOT NULL,
    run_at             REAL    NOT NULL,
    created_at         REAL    NOT NULL,
    started_at         REAL,
    finished_at        REAL,
    attempts           INTEGER NOT NULL DEFAULT 0,  -- runs started
    stalls             INTEGER NOT NULL DEFAULT 0,  -- runs whose worker died (rescued)
    max_attempts       INTEGER NOT NULL,
    max_stalls         INTEGER NOT NULL DEFAULT 1,
    progress           INTEGER NOT NULL DEFAULT 0,
    result             TEXT,
    errors             TEXT,                       -- JSON array of error records
    tags               TEXT,                       -- JSON array of strings
    group_key          TEXT,
    tenant             TEXT,
    idempotency_key    TEXT,
    options            TEXT,                       -- JSON object of per-job overrides
    remove_on_complete INTEGER NOT NULL DEFAULT 0,
    lease_token        TEXT,
    lease_expires_at   REAL,
    worker_id          TEXT,
    cancel_requested   INTEGER NOT NULL DEFAULT 0,
    wait_token         TEXT,                       -- the token a waiting job waits on
    -- Workflows (workflows.py): the batch of a member not yet counted (and of a batch's
    -- callback job), the dependencies a waiting job still waits on (NULL: it waits on
    -- none), what a failed dependency does to it (NULL: it has no dependencies), and
    -- whether it may have dependents still waiting on it.
    batch_id              TEXT,
    deps_left             INTEGER,
    on_dependency_failure TEXT,
    dependents            INTEGER NOT NULL DEFAULT 0
);

-- The claim reads only this partial index, however many finished rows the table holds.
CREATE INDEX IF NOT EXISTS conveyor_jobs_ready
    ON conveyor_jobs (priority, run_at, id) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS conveyor_jobs_scheduled
    ON conveyor_jobs (run_at) WHERE state = 'scheduled';
-- Durable waits (sleeps, token waits): resume_due walks this; the claim never sees them.
CREATE INDEX IF NOT EXISTS conveyor_jobs_waiting
    ON conveyor_jobs (run_at) WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS conveyor_jobs_running
    ON conveyor_jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX IF NOT EXISTS conveyor_jobs_group_running
    ON conveyor_jobs (group_key) WHERE state = 'running' AND group_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS conveyor_jobs_finished
    ON conveyor_jobs (state, finished_at) WHERE state IN ('completed', 'failed', 'cancelled');
-- Idempotency: the store rejects a second row with the same (tenant, key), race-free.
CREATE UNIQUE INDEX IF NOT EXISTS conveyor_jobs_idempotency
    ON conveyor_jobs (coalesce(tenant, ''), idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS conveyor_events (
    -- the cursor of Queue.events(): AUTOINCREMENT, so that an id is never handed out
    -- twice, even after the newest event is deleted (a reader past it would miss the next)
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL,
    type     TEXT    NOT NULL,
    job_name TEXT    NOT NULL,
    tenant   TEXT,
    attempt  INTEGER NOT NULL,
    at       REAL    NOT NULL,
    data     TEXT
);
CREATE INDEX IF NOT EXISTS conveyor_events_job ON conveyor_events (job_id, id);

-- The "enqueued" event is not stored: the job row's created_at is that event, and the
-- backend reads it from there (it is the one event every job has, so this halves the
-- cost of an enqueue). Retries' "enqueued" events are stored.
DROP TRIGGER IF EXISTS conveyor_jobs_enqueued;

CREATE TABLE IF NOT EXISTS conveyor_logs (
    id      INTEGER PRIMARY KEY,
    job_id  INTEGER NOT NULL,
    at      REAL    NOT NULL,
    level   TEXT    NOT NULL,
    message TEXT    NOT NULL,
    attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS conveyor_logs_job ON conveyor_logs (job_id, id);

CREATE TABLE IF NOT EXISTS conveyor_paused (
    channel TEXT PRIMARY KEY  -- '' (never a channel name) pauses every channel
);

CREATE TABLE IF NOT EXISTS conveyor_locks (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS conveyor_cron (
    name          TEXT PRIMARY KEY,
    expression    TEXT    NOT NULL,
    job           TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    timezone      TEXT    NOT NULL,
    paused        INTEGER NOT NULL DEFAULT 0,
    allow_overlap INTEGER NOT NULL DEFAULT 0,
    catch_up      REAL,
    options       TEXT,
    next_run_at   REAL,
    last_run_at   REAL,
    last_job_id   INTEGER
);

-- Durable execution (DESIGN.md "Durable multi-step jobs"): a job's completed steps, in
-- the order stored (id), one per name.
CREATE TABLE IF NOT EXISTS conveyor_steps (
    id     INTEGER PRIMARY KEY,
    job_id INTEGER NOT NULL,
    name   TEXT    NOT NULL,
    result TEXT    NOT NULL,  -- JSON text
    at     REAL    NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS conveyor_steps_job ON conveyor_steps (job_id, name);

-- Tokens of ctx.create_token: stored with their step, completed by Queue.complete_token.
CREATE TABLE IF NOT EXISTS conveyor_tokens (
    id           TEXT    PRIMARY KEY,
    job_id       INTEGER NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'completed', 'expired')),
    data         TEXT,                  -- JSON text given to complete_token
    tags         TEXT,                  -- JSON array of strings
    expires_at   REAL,                  -- NULL: never expires
    created_at   REAL    NOT NULL,
    completed_at REAL
);
CREATE INDEX IF NOT EXISTS conveyor_tokens_job ON conveyor_tokens (job_id, created_at);

-- A job's steps and tokens go with it, however it is deleted (remove_on_complete,
-- remove_on_fail, prune, clean): two probes of small indexes in the engine, no
-- statement more for the caller.
CREATE TRIGGER IF NOT EXISTS conveyor_jobs_deleted AFTER DELETE ON conveyor_jobs
BEGIN
    DELETE FROM conveyor_steps WHERE job_id = old.id;
    DELETE FROM conveyor_tokens WHERE job_id = old.id;
END;

-- Workflows (DESIGN.md "Workflows: dependencies and batches", workflows.py): one edge per
-- dependency of a job; resolved once the dependency's final transition counted it.
CREATE TABLE IF NOT EXISTS conveyor_dependencies (
    job_id     INTEGER NOT NULL,            -- the dependent
    depends_on INTEGER NOT NULL,            -- the job it waits for
    resolved   INTEGER NOT NULL DEFAULT 0,
    UNIQUE (job_id, depends_on)
);
CREATE INDEX IF NOT EXISTS conveyor_dependencies_open
    ON conveyor_dependencies (depends_on) WHERE resolved = 0;

-- Batches (queue.enqueue_batch): counters of the members' ends, and the callback job
-- (JSON of a NewJob) stored once every member has finished.
CREATE TABLE IF NOT EXISTS conveyor_batches (
    id              TEXT    PRIMARY KEY,
    total           INTEGER NOT NULL,
    completed       INTEGER NOT NULL DEFAULT 0,
    failed          INTEGER NOT NULL DEFAULT 0,
    cancelled       INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL CHECK (state IN ('running', 'done')),
    created_at      REAL    NOT NULL,
    callback        TEXT,
    callback_job_id INTEGER
);

-- A deleted job's edges go with it, and a batch with its callback job. Only rows with a
-- marker fire it: a job without dependencies or batch costs its delete nothing more.
CREATE TRIGGER IF NOT EXISTS conveyor_jobs_deleted_workflow AFTER DELETE ON conveyor_jobs
WHEN old.on_dependency_failure IS NOT NULL OR old.batch_id IS NOT NULL
BEGIN
    DELETE FROM conveyor_dependencies
    WHERE old.on_dependency_failure IS NOT NULL AND job_id = old.id;
    DELETE FROM conveyor_batches
    WHERE old.batch_id IS NOT NULL AND id = old.batch_id AND callback_job_id = old.id;
END;

-- Workers registered by Queue.worker() (the operations surface): one row each, replaced
-- at every heartbeat; a row whose expires_at has passed is a dead worker, no longer
-- listed, and deleted by the next registration.
CREATE TABLE IF NOT EXISTS conveyor_workers (
    id          TEXT    PRIMARY KEY,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    channels    TEXT,              -- JSON array of strings; NULL: every channel
    concurrency INTEGER NOT NULL,
    running     TEXT    NOT NULL,  -- JSON array of the job ids it runs now
    started_at  REAL    NOT NULL,
    last_seen   REAL    NOT NULL,
    expires_at  REAL    NOT NULL
);

-- Flow control (DESIGN.md "Flow control: limits and fairness"), see flow.py.
-- The cell merge of a limited claim reads queued jobs per cell through the index
-- conveyor_jobs_ready_cells, which is created (queries.sql, create_cells_index) by the
-- first claim that needs it, not here: a store that never limits a backlog keeps
-- today's cost of every enqueue and claim (no index more to maintain).

-- A channel's stored limits (set_channel_limits); a row has at least one of them.
CREATE TABLE IF NOT EXISTS conveyor_channel_limits (
    channel     TEXT PRIMARY KEY,
    concurrency INTEGER,
    rate_n      INTEGER,
    rate_per    REAL,
    fair_by     TEXT
);

-- The start log of rate limits, counted per span (ClaimLimit, conveyor.limits.rate_span):
-- one row per (scope, target, key), key value and span, with the span's end, its latest
-- start and the number of starts in it. A claim adds its starts to the row of the span
-- holding its now (an upsert), and counts a row in full while its latest start is in the
-- window (latest + per > now): no start is ever counted too few (none is later than the
-- latest), a start counts at most one span longer than itself, and starts of one
-- instant (a claim's) count exactly as long as they should.
-- The key ends with the span's end: one range of it finds a window's rows (no latest
-- start is after its end), one range deletes the spans no window counts any more, and
-- rows whose spans differ in length (a rate whose per changed between workers) that
-- meet on one end are summed safely. WITHOUT ROWID: the key is the table.
CREATE TABLE IF NOT EXISTS conveyor_rate_spans (
    scope    TEXT    NOT NULL,  -- 'name' | 'channel'
    target   TEXT    NOT NULL,
    key      TEXT    NOT NULL,  -- '' (the whole scope), 'group' or 'tenant'
    span_end REAL    NOT NULL,  -- no start in the span is later
    value    TEXT    NOT NULL,  -- the group or tenant; '' none (never a value), or key ''
    latest   REAL    NOT NULL,  -- the latest start in the span
    n        INTEGER NOT NULL,  -- starts in the span
    PRIMARY KEY (scope, target, key, span_end, value)
) WITHOUT ROWID;

-- The start log as it was before spans: one row per start, at the claim's now. A store
-- made then has its rows moved into the span log here, the starts of one instant as one
-- row with that instant as its end and latest start, so each counts exactly as long as
-- it did (an upgrade in the middle of a window lets no burst through); the old table is
-- then dropped. In a newer store the table is made empty and dropped again, which moves
-- nothing.
CREATE TABLE IF NOT EXISTS conveyor_starts (
    scope  TEXT NOT NULL,
    target TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT,
    at     REAL NOT NULL
);
INSERT INTO conveyor_rate_spans (scope, target, key, span_end, value, latest, n)
SELECT scope, target, key, at, coalesce(value, ''), at, count(*) FROM conveyor_starts
WHERE true
GROUP BY scope, target, key, at, coalesce(value, '')
ON CONFLICT (scope, target, key, span_end, value)
DO UPDATE SET n = n + excluded.n, latest = max(latest, excluded.latest);
DROP TABLE conveyor_starts;
