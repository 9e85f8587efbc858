-- Named queries of the SQLite backend. Parameters are bound by name; list-valued filters
-- arrive as JSON arrays and are read with json_each, so the SQL text never changes.

-- name: has_column
-- Whether table ? has column ? (migrate: the columns added since a table was created).
SELECT 1 FROM pragma_table_info(?) WHERE name = ?

-- name: table_sql
-- The CREATE TABLE text of table ? (migrate: whether conveyor_events is AUTOINCREMENT).
SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?

-- name: insert_job
INSERT INTO conveyor_jobs (name, channel, payload, state, priority, run_at, created_at,
    max_attempts, max_stalls, tags, group_key, tenant, idempotency_key, options,
    remove_on_complete)
VALUES (:name, :channel, :payload, :state, :priority, :run_at, :now,
    :max_attempts, :max_stalls, :tags, :group_key, :tenant, :idempotency_key, :options,
    :remove_on_complete)
ON CONFLICT DO NOTHING
RETURNING id

-- name: insert_jobs_bulk
-- A whole batch in one statement. Ids are assigned in batch order (AUTOINCREMENT, one
-- writer), which is how the backend maps them back to the specs.
INSERT INTO conveyor_jobs (name, channel, payload, state, priority, run_at, created_at,
    max_attempts, max_stalls, tags, group_key, tenant, idempotency_key, options,
    remove_on_complete)
SELECT value ->> '$.name', value ->> '$.channel', value ->> '$.payload', value ->> '$.state',
       value ->> '$.priority', value ->> '$.run_at', :now, value ->> '$.max_attempts',
       value ->> '$.max_stalls', value ->> '$.tags', value ->> '$.group_key',
       value ->> '$.tenant', value ->> '$.idempotency_key', value ->> '$.options',
       value ->> '$.remove_on_complete'
FROM json_each(:jobs) WHERE true ORDER BY key
ON CONFLICT DO NOTHING
RETURNING id, tenant, idempotency_key

-- name: find_idempotent
SELECT id FROM conveyor_jobs
WHERE coalesce(tenant, '') = coalesce(:tenant, '') AND idempotency_key = :idempotency_key

-- name: insert_event
INSERT INTO conveyor_events (job_id, type, job_name, tenant, attempt, at, data)
VALUES (:job_id, :type, :job_name, :tenant, :attempt, :at, :data)

-- name: claim_candidates
SELECT id, group_key FROM conveyor_jobs AS j
WHERE state = 'queued' AND run_at <= :now
  AND (:channels IS NULL OR channel IN (SELECT value FROM json_each(:channels)))
  AND (:include IS NULL OR name IN (SELECT value FROM json_each(:include)))
  AND (:exclude IS NULL OR name NOT IN (SELECT value FROM json_each(:exclude)))
  AND NOT EXISTS (SELECT 1 FROM conveyor_paused AS p WHERE p.channel IN (j.channel, ''))
  AND (group_key IS NULL OR NOT EXISTS (
        SELECT 1 FROM conveyor_jobs AS r WHERE r.group_key = j.group_key AND r.state = 'running'))
ORDER BY priority, run_at, id
LIMIT :scan

-- name: claim_mark
UPDATE conveyor_jobs
SET state = 'running', attempts = attempts + 1, lease_token = :token,
    lease_expires_at = :lease_expires_at, started_at = :now, worker_id = :worker_id,
    cancel_requested = 0
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'queued'
RETURNING id, name, payload, attempts, max_attempts, channel, priority, tenant, group_key,
    tags, options, run_at, created_at, remove_on_complete, stalls, max_stalls

-- name: claim_events
INSERT INTO conveyor_events (job_id, type, job_name, tenant, attempt, at, data)
SELECT id, 'started', name, tenant, attempts, :now, NULL
FROM conveyor_jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: finish_many
-- One statement for a whole batch of outcomes (a JSON array of objects), each applied
-- only if the job is still running under that token (and expired, for a rescue).
-- wait_token is set only by a wait; "resumed" marks a wait turned into queued (its token
-- was no longer waitable), which keeps its progress like the wait it stands for.
-- A job whose cancel was requested while it ran is cancelled instead, when the outcome
-- would run it again (`again`: Outcome.yields_to_cancel); the stored state comes back.
UPDATE conveyor_jobs AS j
SET state = CASE WHEN j.cancel_requested AND o.again THEN 'cancelled' ELSE o.state END,
    result = coalesce(o.result, j.result),
    errors = CASE WHEN o.error IS NULL THEN j.errors
                  ELSE json_insert(coalesce(j.errors, '[]'), '$[#]', json(o.error)) END,
    attempts = j.attempts - o.refund,
    stalls = j.stalls + o.stall,
    run_at = coalesce(o.run_at, j.run_at),
    finished_at = CASE WHEN o.state IN ('completed', 'failed', 'cancelled')
                         OR (j.cancel_requested AND o.again) THEN o.at ELSE NULL END,
    progress = CASE WHEN o.state = 'completed' THEN 100
                    WHEN j.cancel_requested AND o.again THEN j.progress
                    WHEN o.state IN ('queued', 'scheduled') AND o.resumed IS NULL THEN 0
                    ELSE j.progress END,
    lease_token = NULL, lease_expires_at = NULL, worker_id = NULL,
    cancel_requested = CASE WHEN o.again THEN 0 ELSE j.cancel_requested END,
    wait_token = CASE WHEN j.cancel_requested AND o.again THEN NULL ELSE o.wait_token END
FROM (SELECT value ->> '$.id' AS id, value ->> '$.token' AS token, value ->> '$.state' AS state,
             value ->> '$.result' AS result, value ->> '$.error' AS error,
             value ->> '$.refund' AS refund, value ->> '$.stall' AS stall,
             value ->> '$.run_at' AS run_at, value ->> '$.at' AS at,
             value ->> '$.expired_before' AS expired_before,
             value ->> '$.wait_token' AS wait_token, value ->> '$.resumed' AS resumed,
             value ->> '$.again' AS again
      FROM json_each(:outcomes)) AS o
WHERE j.id = o.id AND j.state = 'running' AND j.lease_token = o.token
  AND (o.expired_before IS NULL OR j.lease_expires_at <= o.expired_before)
RETURNING id, name, tenant, attempts, group_key, dependents, batch_id, state

-- name: finish_remove
DELETE FROM conveyor_jobs
WHERE id = :job_id AND state = 'running' AND lease_token = :token
  AND (:expired_before IS NULL OR lease_expires_at <= :expired_before)
RETURNING name, tenant, attempts, group_key, dependents, batch_id

-- name: delete_job_children
DELETE FROM conveyor_logs WHERE job_id = :job_id

-- name: heartbeat
UPDATE conveyor_jobs SET lease_expires_at = :lease_expires_at
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'running'
  AND lease_token = json_extract(:tokens, '$."' || id || '"')
RETURNING id, cancel_requested

-- name: cancel_requests
SELECT id FROM conveyor_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'running' AND cancel_requested = 1

-- name: set_progress
UPDATE conveyor_jobs SET progress = :progress
WHERE id = :job_id AND state = 'running' AND lease_token = :token
RETURNING name, tenant, attempts

-- name: insert_log
-- Fenced like an outcome: stored only while the job is running under :token (a stale
-- worker's lines, and those of a job that finished or is gone, are dropped).
INSERT INTO conveyor_logs (job_id, at, level, message, attempt)
SELECT :job_id, :at, :level, :message, :attempt
WHERE EXISTS (SELECT 1 FROM conveyor_jobs
              WHERE id = :job_id AND state = 'running' AND lease_token = :token)

-- name: expired_leases
SELECT id, lease_token, name, tenant, attempts, max_attempts, options, cancel_requested,
    stalls, max_stalls
FROM conveyor_jobs
WHERE state = 'running' AND lease_expires_at <= :now
ORDER BY lease_expires_at
LIMIT :limit

-- name: promote_due
UPDATE conveyor_jobs SET state = 'queued'
WHERE id IN (SELECT id FROM conveyor_jobs WHERE state = 'scheduled' AND run_at <= :until
             ORDER BY run_at LIMIT :limit)
RETURNING run_at

-- name: prune_ids
SELECT id, name, tenant, attempts FROM conveyor_jobs
WHERE state = :state AND finished_at < :before LIMIT :limit

-- name: delete_jobs
DELETE FROM conveyor_jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: delete_not_running
-- delete_jobs: the given jobs unless running (their steps and tokens go by the trigger;
-- the caller deletes their events and logs in the same transaction, as prune does).
DELETE FROM conveyor_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state <> 'running'
RETURNING id, name, tenant, attempts, state, dependents, batch_id

-- name: delete_events_of
DELETE FROM conveyor_events WHERE job_id IN (SELECT value FROM json_each(:ids))

-- name: delete_logs_of
DELETE FROM conveyor_logs WHERE job_id IN (SELECT value FROM json_each(:ids))

-- name: prune_orphan_events
DELETE FROM conveyor_events WHERE id IN (
    SELECT e.id FROM conveyor_events AS e
    WHERE e.at < :before AND NOT EXISTS (SELECT 1 FROM conveyor_jobs AS j WHERE j.id = e.job_id)
    LIMIT :limit)

-- name: acquire_lock
INSERT INTO conveyor_locks (name, owner, expires_at) VALUES (:name, :owner, :expires_at)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE conveyor_locks.owner = excluded.owner OR conveyor_locks.expires_at <= :now
RETURNING owner

-- name: get_job
SELECT * FROM conveyor_jobs WHERE id = :job_id AND (:tenant IS NULL OR tenant = :tenant)

-- name: list_jobs
SELECT * FROM conveyor_jobs AS j
WHERE (:state IS NULL OR state = :state)
  AND (:name IS NULL OR name = :name)
  -- a literal prefix (no LIKE: % and _ in it are plain characters); counts characters
  AND (:name_prefix IS NULL OR substr(name, 1, length(:name_prefix)) = :name_prefix)
  AND (:channel IS NULL OR channel = :channel)
  AND (:tenant IS NULL OR tenant = :tenant)
  AND (:before_id IS NULL OR id < :before_id)
  AND (:tags IS NULL OR CASE :tag_mode
        WHEN 'any' THEN EXISTS (SELECT 1 FROM json_each(j.tags) AS t
                                WHERE t.value IN (SELECT value FROM json_each(:tags)))
        WHEN 'none' THEN NOT EXISTS (SELECT 1 FROM json_each(j.tags) AS t
                                WHERE t.value IN (SELECT value FROM json_each(:tags)))
        WHEN 'all' THEN (SELECT count(DISTINCT t.value) FROM json_each(j.tags) AS t
                         WHERE t.value IN (SELECT value FROM json_each(:tags)))
                        = (SELECT count(DISTINCT value) FROM json_each(:tags))
        WHEN 'exact' THEN (SELECT count(DISTINCT t.value) FROM json_each(j.tags) AS t
                           WHERE t.value IN (SELECT value FROM json_each(:tags)))
                          = (SELECT count(DISTINCT value) FROM json_each(:tags))
                      AND (SELECT count(DISTINCT t.value) FROM json_each(j.tags) AS t)
                          = (SELECT count(DISTINCT value) FROM json_each(:tags))
        END)
  AND (:upcoming = 0 OR state IN ('scheduled', 'queued', 'waiting'))
ORDER BY id DESC
LIMIT :limit

-- name: counts
SELECT state, count(*) AS n FROM conveyor_jobs
WHERE (:channel IS NULL OR channel = :channel)
GROUP BY state

-- name: channel_stats
SELECT channel, state, count(*) AS n,
       min(CASE WHEN state = 'queued' THEN run_at END) AS oldest
FROM conveyor_jobs GROUP BY channel, state

-- name: cancel_upcoming
UPDATE conveyor_jobs SET state = 'cancelled', finished_at = :now, wait_token = NULL,
    deps_left = NULL
WHERE id = :job_id AND state IN ('scheduled', 'queued', 'waiting')
RETURNING name, tenant, attempts, dependents, batch_id

-- name: cancel_running
UPDATE conveyor_jobs SET cancel_requested = 1
WHERE id = :job_id AND state = 'running'
RETURNING id

-- name: job_state
SELECT state FROM conveyor_jobs WHERE id = :job_id

-- name: retry
UPDATE conveyor_jobs
SET state = 'queued', attempts = 0, stalls = 0, run_at = :now, finished_at = NULL,
    started_at = NULL, progress = 0, cancel_requested = 0, result = NULL
WHERE id = :job_id AND state IN ('failed', 'cancelled')
RETURNING name, tenant

-- name: pause
INSERT INTO conveyor_paused (channel) VALUES (:channel) ON CONFLICT DO NOTHING

-- name: resume
DELETE FROM conveyor_paused WHERE channel = :channel

-- name: resume_all
DELETE FROM conveyor_paused

-- name: get_logs
SELECT at, level, message, attempt FROM conveyor_logs WHERE job_id = :job_id ORDER BY id

-- name: get_events
SELECT * FROM (
    SELECT 0 AS src, 0 AS id, 'enqueued' AS type, id AS job_id, name AS job_name, tenant,
           0 AS attempt, created_at AS at, NULL AS data
    FROM conveyor_jobs WHERE id = :job_id
    UNION ALL
    SELECT 1, id, type, job_id, job_name, tenant, attempt, at, data FROM conveyor_events
    WHERE job_id = :job_id
) ORDER BY src, id

-- name: read_events
SELECT id, type, job_id, job_name, tenant, attempt, at, data FROM conveyor_events
WHERE id > :after ORDER BY id LIMIT :limit

-- name: read_enqueued
SELECT id, 'enqueued' AS type, id AS job_id, name AS job_name, tenant, 0 AS attempt,
       created_at AS at, NULL AS data
FROM conveyor_jobs WHERE id > :after ORDER BY id LIMIT :limit

-- name: max_event_id
SELECT (SELECT coalesce(max(id), 0) FROM conveyor_events),
       (SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = 'conveyor_jobs')

-- name: upsert_cron
INSERT INTO conveyor_cron (name, expression, job, payload, timezone, paused, allow_overlap,
    catch_up, options, next_run_at, last_run_at, last_job_id)
VALUES (:name, :expression, :job, :payload, :timezone, :paused, :allow_overlap,
    :catch_up, :options, :next_run_at, :last_run_at, :last_job_id)
ON CONFLICT (name) DO UPDATE SET expression = excluded.expression, job = excluded.job,
    payload = excluded.payload, timezone = excluded.timezone, paused = excluded.paused,
    allow_overlap = excluded.allow_overlap, catch_up = excluded.catch_up,
    options = excluded.options, next_run_at = excluded.next_run_at

-- name: list_cron
SELECT * FROM conveyor_cron ORDER BY name

-- name: delete_cron
DELETE FROM conveyor_cron WHERE name IN (SELECT value FROM json_each(:names))

-- name: set_cron_paused
UPDATE conveyor_cron SET paused = :paused, next_run_at = coalesce(:next_run_at, next_run_at)
WHERE name = :name

-- name: cron_cas
UPDATE conveyor_cron SET next_run_at = :new_next, last_run_at = :tick
WHERE name = :name AND next_run_at = :expected_next AND paused = 0

-- name: cron_set_last_job
UPDATE conveyor_cron SET last_job_id = :job_id WHERE name = :name

-- Durable execution: steps, tokens, waits (durable.py and the waits of finish_many).

-- name: step_fence
SELECT 1 FROM conveyor_jobs WHERE id = :job_id AND state = 'running' AND lease_token = :token

-- name: insert_step
-- The first result of a name stands: a second save of it inserts nothing (no row back).
INSERT INTO conveyor_steps (job_id, name, result, at) VALUES (:job_id, :name, :result, :at)
ON CONFLICT (job_id, name) DO NOTHING
RETURNING id

-- name: insert_token
INSERT INTO conveyor_tokens (id, job_id, state, tags, expires_at, created_at)
VALUES (:id, :job_id, 'pending', :tags, :expires_at, :created_at)

-- name: load_steps
SELECT name, result, at FROM conveyor_steps WHERE job_id = :job_id ORDER BY id

-- name: get_token
SELECT * FROM conveyor_tokens WHERE id = :id

-- name: list_tokens
SELECT * FROM conveyor_tokens WHERE job_id = :job_id ORDER BY created_at, rowid

-- name: token_waitable
SELECT state, expires_at FROM conveyor_tokens WHERE id = :id

-- name: expire_tokens
UPDATE conveyor_tokens SET state = 'expired'
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'pending'
RETURNING id

-- name: complete_token
UPDATE conveyor_tokens SET state = 'completed', data = :data, completed_at = :now
WHERE id = :id AND state = 'pending' AND (expires_at IS NULL OR expires_at > :now)
RETURNING job_id

-- name: resume_on_token
UPDATE conveyor_jobs SET state = 'queued', run_at = :now, wait_token = NULL
WHERE id = :job_id AND state = 'waiting' AND wait_token = :token
RETURNING name, tenant, attempts

-- name: due_waiting
-- Reads the partial conveyor_jobs_waiting_due index only (jobs waiting on dependencies
-- are not in it: their run_at is no time to wake).
SELECT id, name, tenant, attempts, wait_token FROM conveyor_jobs
    INDEXED BY conveyor_jobs_waiting_due
WHERE state = 'waiting' AND deps_left IS NULL AND run_at <= :now
ORDER BY run_at
LIMIT :limit

-- name: resume_jobs
UPDATE conveyor_jobs SET state = 'queued', run_at = :now, wait_token = NULL
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'waiting'

-- The operations surface (operations.py): worker registry, pause state, throughput.

-- name: forget_expired_workers
DELETE FROM conveyor_workers WHERE expires_at <= :now

-- name: register_worker
INSERT INTO conveyor_workers (id, host, pid, channels, concurrency, running, started_at,
    last_seen, expires_at)
VALUES (:id, :host, :pid, :channels, :concurrency, :running, :started_at, :last_seen,
    :expires_at)
ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
    channels = excluded.channels, concurrency = excluded.concurrency,
    running = excluded.running, started_at = excluded.started_at,
    last_seen = excluded.last_seen, expires_at = excluded.expires_at

-- name: remove_worker
DELETE FROM conveyor_workers WHERE id = :id

-- name: list_workers
SELECT * FROM conveyor_workers WHERE expires_at > :now ORDER BY started_at, id

-- name: paused_channels
SELECT channel FROM conveyor_paused

-- name: throughput
-- Bucket i is [:since + i * :bucket, :since + (i + 1) * :bucket), bounds computed as the
-- docstring of ThroughputParams writes them (so a job on a bound is in the later
-- bucket, whatever the float rounding): one range seek of the partial
-- conveyor_jobs_finished index (state, finished_at) per bucket and final state.
WITH RECURSIVE b(i) AS (
    SELECT 0 WHERE :buckets > 0
    UNION ALL
    SELECT i + 1 FROM b WHERE i + 1 < :buckets
)
SELECT b.i AS idx, j.state AS state, count(*) AS n
FROM b JOIN conveyor_jobs AS j
  ON j.state IN ('completed', 'failed', 'cancelled')
 AND j.finished_at >= :since + b.i * :bucket
 AND j.finished_at < :since + (b.i + 1) * :bucket
GROUP BY b.i, j.state

-- Flow control (flow.py): the limited claim, the start log of rates, channel limits.
-- Claimed rows are (id, name, channel, tenant, group_key, priority, run_at).

-- name: flow_running
-- The running jobs (few: bounded by the workers' slots), counted against the limits.
SELECT name, channel, tenant, group_key FROM conveyor_jobs INDEXED BY conveyor_jobs_running
WHERE state = 'running'

-- name: flow_walk
-- The due jobs in claim order, read lazily (the caller stops when it has enough, or
-- when too many are held back and it takes the cell merge instead).
SELECT id, name, channel, tenant, group_key, priority, run_at
FROM conveyor_jobs AS j INDEXED BY conveyor_jobs_ready
WHERE state = 'queued' AND run_at <= :now
  AND (:channels IS NULL OR channel IN (SELECT value FROM json_each(:channels)))
  AND (:include IS NULL OR name IN (SELECT value FROM json_each(:include)))
  AND (:exclude IS NULL OR name NOT IN (SELECT value FROM json_each(:exclude)))
  AND NOT EXISTS (SELECT 1 FROM conveyor_paused AS p WHERE p.channel IN (j.channel, ''))
ORDER BY priority, run_at, id

-- name: has_cells_index
SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'conveyor_jobs_ready_cells'

-- name: create_cells_index
-- The queued jobs by cell (channel, name, tenant, group), each cell in claim order: one
-- seek per cell skips its whole backlog (a full key's), however long. Tenants and
-- groups are never '' (validated), so coalesce(…, '') is the cell of jobs without one.
-- Created by the first claim that needs the cell merge (see schema.sql).
CREATE INDEX IF NOT EXISTS conveyor_jobs_ready_cells
    ON conveyor_jobs (channel, name, coalesce(tenant, ''), coalesce(group_key, ''),
                      priority, run_at, id)
    WHERE state = 'queued'

-- name: flow_cells
-- Every cell (channel, name, tenant, group) with queued jobs, found by a skip scan of
-- conveyor_jobs_ready_cells (one seek per cell, whatever its backlog), with its first
-- due job in claim order; cells the claim may not take from are left out.
WITH RECURSIVE cells(id, channel, name, tenant, grp) AS (
    SELECT id, channel, name, coalesce(tenant, ''), coalesce(group_key, '')
    FROM conveyor_jobs
    WHERE id = (SELECT n.id FROM conveyor_jobs AS n INDEXED BY conveyor_jobs_ready_cells
                WHERE n.state = 'queued'
                ORDER BY n.channel, n.name, coalesce(n.tenant, ''), coalesce(n.group_key, '')
                LIMIT 1)
    UNION ALL
    SELECT x.id, x.channel, x.name, coalesce(x.tenant, ''), coalesce(x.group_key, '')
    FROM cells, conveyor_jobs AS x
    WHERE x.id = coalesce(
        (SELECT n.id FROM conveyor_jobs AS n INDEXED BY conveyor_jobs_ready_cells
         WHERE n.state = 'queued' AND n.channel = cells.channel AND n.name = cells.name
           AND coalesce(n.tenant, '') = cells.tenant AND coalesce(n.group_key, '') > cells.grp
         ORDER BY coalesce(n.group_key, '') LIMIT 1),
        (SELECT n.id FROM conveyor_jobs AS n INDEXED BY conveyor_jobs_ready_cells
         WHERE n.state = 'queued' AND n.channel = cells.channel AND n.name = cells.name
           AND coalesce(n.tenant, '') > cells.tenant
         ORDER BY coalesce(n.tenant, ''), coalesce(n.group_key, '') LIMIT 1),
        (SELECT n.id FROM conveyor_jobs AS n INDEXED BY conveyor_jobs_ready_cells
         WHERE n.state = 'queued' AND n.channel = cells.channel AND n.name > cells.name
         ORDER BY n.name, coalesce(n.tenant, ''), coalesce(n.group_key, '') LIMIT 1),
        (SELECT n.id FROM conveyor_jobs AS n INDEXED BY conveyor_jobs_ready_cells
         WHERE n.state = 'queued' AND n.channel > cells.channel
         ORDER BY n.channel, n.name, coalesce(n.tenant, ''), coalesce(n.group_key, '')
         LIMIT 1))
)
SELECT h.id, h.name, h.channel, h.tenant, h.group_key, h.priority, h.run_at
FROM cells JOIN conveyor_jobs AS h ON h.id = (
    SELECT n.id FROM conveyor_jobs AS n INDEXED BY conveyor_jobs_ready_cells
    WHERE n.state = 'queued' AND n.channel = cells.channel AND n.name = cells.name
      AND coalesce(n.tenant, '') = cells.tenant AND coalesce(n.group_key, '') = cells.grp
      AND n.run_at <= :now
    ORDER BY n.priority, n.run_at, n.id LIMIT 1)
WHERE (:channels IS NULL OR cells.channel IN (SELECT value FROM json_each(:channels)))
  AND (:include IS NULL OR cells.name IN (SELECT value FROM json_each(:include)))
  AND (:exclude IS NULL OR cells.name NOT IN (SELECT value FROM json_each(:exclude)))
  AND NOT EXISTS (SELECT 1 FROM conveyor_paused AS p WHERE p.channel IN (cells.channel, ''))

-- name: flow_cell_next
-- The next due jobs of one cell after (priority, run_at, id), in claim order.
SELECT id, name, channel, tenant, group_key, priority, run_at
FROM conveyor_jobs AS n INDEXED BY conveyor_jobs_ready_cells
WHERE n.state = 'queued' AND n.channel = :channel AND n.name = :name
  AND coalesce(n.tenant, '') = :tenant AND coalesce(n.group_key, '') = :grp
  AND n.run_at <= :now AND (n.priority, n.run_at, n.id) > (:priority, :run_at, :id)
ORDER BY n.priority, n.run_at, n.id
LIMIT :limit

-- name: starts_count
-- Starts of one (scope, target, key) per value: the rows whose latest start is in the
-- window (now - per, now], and any later one (another worker's clock). The exact test is
-- latest + per > now; the range on the key's span_end (never before latest; less a
-- millisecond for the float rounding of now - per) reads those rows and at most one
-- span more: one row per rate_span(per) and value.
SELECT value, sum(n) FROM conveyor_rate_spans
WHERE scope = :scope AND target = :target AND key = :key
  AND span_end > :now - :per - 0.001 AND latest + :per > :now
GROUP BY value

-- name: starts_add
-- Add a claim's :n starts at :now to the span ending at :span_end.
INSERT INTO conveyor_rate_spans (scope, target, key, span_end, value, latest, n)
VALUES (:scope, :target, :key, :span_end, :value, :now, :n)
ON CONFLICT (scope, target, key, span_end, value)
DO UPDATE SET n = n + excluded.n, latest = max(latest, excluded.latest)

-- name: starts_forget
-- Spans no window of this (scope, target, key) counts any more (per: its longest), with
-- a second to spare for a worker whose clock is behind this one's (it still counts
-- them): a range at the low end of the key, which touches only the rows it deletes.
DELETE FROM conveyor_rate_spans
WHERE scope = :scope AND target = :target AND key = :key AND span_end < :now - :per - 1.0

-- name: set_channel_limits
INSERT INTO conveyor_channel_limits (channel, concurrency, rate_n, rate_per, fair_by)
VALUES (:channel, :concurrency, :rate_n, :rate_per, :fair_by)
ON CONFLICT (channel) DO UPDATE SET concurrency = excluded.concurrency,
    rate_n = excluded.rate_n, rate_per = excluded.rate_per, fair_by = excluded.fair_by

-- name: delete_channel_limits
DELETE FROM conveyor_channel_limits WHERE channel = :channel

-- name: list_channel_limits
SELECT channel, concurrency, rate_n, rate_per, fair_by FROM conveyor_channel_limits
ORDER BY channel
