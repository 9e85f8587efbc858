-- conveyor PostgreSQL schema, version 4: the worker registry (DESIGN.md "Operating it":
-- workers register themselves so `conveyor workers`, the dashboard and the MCP server
-- can list them; a dead worker disappears within its lease).
--
-- One row per running worker, replaced by each of its heartbeats (register_worker) and
-- deleted when it stops cleanly (remove_worker). A worker that dies is no longer
-- listed once expires_at has passed; list_workers deletes such rows as it reads. The
-- table holds one row per live worker, so it needs no index beyond its key.

CREATE TABLE {schema}.workers (
    id          text        PRIMARY KEY,
    pid         integer     NOT NULL,
    concurrency integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    host        text        NOT NULL,
    channels    text[],                          -- NULL: every channel
    running     bigint[]    NOT NULL DEFAULT '{}'  -- ids of the jobs it runs now
);
