-- Columns added to conveyor's SQLite tables after their first release. schema.sql
-- creates new databases with them already; in an existing database CREATE TABLE IF NOT
-- EXISTS leaves the old table as it is, and ADD COLUMN is not idempotent, so migrate()
-- runs each statement below (after schema.sql) only when its table lacks its column.
-- One ALTER TABLE <table> ADD COLUMN <column> … per statement, in the order added;
-- never edit or remove one. Any other statement (an index on such a column, after it)
-- runs every time, so it must be idempotent.

-- stalls: runs whose worker died (DESIGN.md "A dead worker is not the job's fault")
ALTER TABLE conveyor_jobs ADD COLUMN stalls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conveyor_jobs ADD COLUMN max_stalls INTEGER NOT NULL DEFAULT 1;

-- wait_token: the token a waiting job waits on (DESIGN.md "Durable multi-step jobs")
ALTER TABLE conveyor_jobs ADD COLUMN wait_token TEXT;

-- workflows: batches, dependencies (DESIGN.md "Workflows: dependencies and batches")
ALTER TABLE conveyor_jobs ADD COLUMN batch_id TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN deps_left INTEGER;
ALTER TABLE conveyor_jobs ADD COLUMN on_dependency_failure TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN dependents INTEGER NOT NULL DEFAULT 0;
-- Due durable waits (resume_due), without the jobs waiting on dependencies (their run_at
-- is kept for later, not a time to wake).
CREATE INDEX IF NOT EXISTS conveyor_jobs_waiting_due
    ON conveyor_jobs (run_at) WHERE state = 'waiting' AND deps_left IS NULL;
