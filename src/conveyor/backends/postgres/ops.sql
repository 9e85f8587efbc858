-- conveyor's PostgreSQL queries of the operations surface (ops.py): the worker registry,
-- the pause state, throughput, deleting jobs. Same rules as queries.sql: the schema
-- placeholder is the only text substituted, every value is a bound parameter, times
-- are the core's epoch seconds.


-- name: register_worker
-- Create or replace worker %(id)s's record (its heartbeat too: every field is replaced).
--   %(id)s, %(host)s, %(pid)s, %(channels)s (text[] or NULL: every channel),
--   %(concurrency)s, %(running)s (bigint[]), %(started_at)s, %(last_seen)s,
--   %(expires_at)s (epoch seconds)
INSERT INTO {schema}.workers AS w (
    id, pid, concurrency, started_at, last_seen, expires_at, host, channels, running)
VALUES (%(id)s::text, %(pid)s::integer, %(concurrency)s::integer,
        to_timestamp(%(started_at)s::float8), to_timestamp(%(last_seen)s::float8),
        to_timestamp(%(expires_at)s::float8), %(host)s::text, %(channels)s::text[],
        %(running)s::bigint[])
ON CONFLICT (id) DO UPDATE
SET pid = EXCLUDED.pid, concurrency = EXCLUDED.concurrency,
    started_at = EXCLUDED.started_at, last_seen = EXCLUDED.last_seen,
    expires_at = EXCLUDED.expires_at, host = EXCLUDED.host, channels = EXCLUDED.channels,
    running = EXCLUDED.running;


-- name: remove_worker
DELETE FROM {schema}.workers WHERE id = %(id)s::text;


-- name: list_workers
-- The workers whose expires_at is after %(now)s, by started_at then id; the expired
-- ones are deleted on the way (the SELECT reads the snapshot before that delete, hence
-- its own filter). A worker whose heartbeat replaces its row concurrently is either
-- deleted before it (the upsert then inserts it anew) or kept.
WITH expired AS (
    DELETE FROM {schema}.workers WHERE expires_at <= to_timestamp(%(now)s::float8)
)
SELECT id, host, pid, channels, concurrency, running,
       extract(epoch FROM started_at)::float8, extract(epoch FROM last_seen)::float8,
       extract(epoch FROM expires_at)::float8
FROM {schema}.workers
WHERE expires_at > to_timestamp(%(now)s::float8)
ORDER BY started_at, id;


-- name: paused_state
-- What set_paused stored: a row per paused channel, '' for every channel.
SELECT channel FROM {schema}.paused_channels;


-- name: throughput
-- Jobs that finished in [%(since)s, %(since)s + %(buckets)s * %(bucket)s) per bucket of
-- %(bucket)s seconds and per final state, in one statement. The range is read through
-- jobs_prune_idx (state, finished_at): the literal state list proves its predicate
-- (as in prune) and gives one index range per state. Each row falls in a bucket by
-- timestamp comparison with the bucket bounds (width_bucket over their array), so a
-- job that finished exactly on a bound is in the bucket that starts there, as the
-- range filter says. Only buckets with a job come back.
--   %(since)s, %(bucket)s (epoch seconds), %(buckets)s
-- Returns (index, completed, failed, cancelled), by index.
SELECT width_bucket(
           j.finished_at,
           ARRAY(SELECT to_timestamp(%(since)s::float8 + g * %(bucket)s::float8)
                 FROM generate_series(0, %(buckets)s::integer) AS g
                 ORDER BY g)) - 1 AS idx,
       count(*) FILTER (WHERE j.state = 'completed'),
       count(*) FILTER (WHERE j.state = 'failed'),
       count(*) FILTER (WHERE j.state = 'cancelled')
FROM {schema}.jobs j
WHERE j.state IN ('completed', 'failed', 'cancelled')
  AND j.finished_at >= to_timestamp(%(since)s::float8)
  AND j.finished_at < to_timestamp(%(since)s::float8
                                   + %(buckets)s::integer * %(bucket)s::float8)
GROUP BY 1
ORDER BY 1;


-- name: delete_jobs
-- Delete the jobs of %(ids)s that are not running, with their events, logs, steps and
-- tokens, in one statement, as prune deletes a job (a running one is skipped: the core
-- asks for a cancel first; an unknown id is skipped). The rows are locked first, in id
-- order, and FOR UPDATE re-reads a row another transaction changed meanwhile: a job
-- that a concurrent claim made running is skipped, never deleted under its worker.
-- An unfinished job deleted ends for its dependents and batch as cancelled at %(now)s
-- (migration 0006: the delete trigger reads the time from conveyor.now, set here first).
--   %(ids)s bigint[], %(now)s
-- Returns the jobs deleted (id, name, tenant, attempts: their `removed` events), by id.
WITH clock AS MATERIALIZED (
    SELECT set_config('conveyor.now', %(now)s::float8::text, true) AS now
),
doomed AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE id = ANY (%(ids)s::bigint[]) AND state <> 'running'
      AND (SELECT count(*) FROM clock) > 0
    ORDER BY id
    FOR UPDATE
),
gone AS (
    DELETE FROM {schema}.jobs j USING doomed d WHERE j.id = d.id
    RETURNING j.id, j.name, j.tenant, j.attempts
),
gone_events AS (
    DELETE FROM {schema}.job_events e USING doomed d WHERE e.job_id = d.id
),
gone_logs AS (
    DELETE FROM {schema}.job_logs l USING doomed d WHERE l.job_id = d.id
),
gone_steps AS (
    DELETE FROM {schema}.job_steps s USING doomed d WHERE s.job_id = d.id
),
gone_tokens AS (
    DELETE FROM {schema}.job_tokens k USING doomed d WHERE k.job_id = d.id
)
SELECT g.id, g.name, g.tenant, g.attempts FROM gone g ORDER BY g.id;
