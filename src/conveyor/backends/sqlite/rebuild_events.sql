-- conveyor_events of a store made before its id was AUTOINCREMENT (schema.sql): rebuilt
-- once by migrate(), in its transaction (all or nothing), only while the table's SQL
-- lacks AUTOINCREMENT. The rows keep their ids; sqlite_sequence starts at the largest.
CREATE TABLE conveyor_events_rebuild (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id   INTEGER NOT NULL,
    type     TEXT    NOT NULL,
    job_name TEXT    NOT NULL,
    tenant   TEXT,
    attempt  INTEGER NOT NULL,
    at       REAL    NOT NULL,
    data     TEXT
);
INSERT INTO conveyor_events_rebuild (id, job_id, type, job_name, tenant, attempt, at, data)
SELECT id, job_id, type, job_name, tenant, attempt, at, data FROM conveyor_events ORDER BY id;
DROP TABLE conveyor_events;
ALTER TABLE conveyor_events_rebuild RENAME TO conveyor_events;
CREATE INDEX IF NOT EXISTS conveyor_events_job ON conveyor_events (job_id, id);
