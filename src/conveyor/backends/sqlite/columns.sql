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
