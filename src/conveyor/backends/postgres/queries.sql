-- conveyor's PostgreSQL queries, one named block each ("-- name: <name>"), loaded once.
--
-- The schema placeholder (the word schema in braces) is replaced by the quoted schema
-- name (validated setting); every value is a bound parameter, never text spliced into
-- SQL. Times arrive as epoch seconds from the core's clock and go through
-- to_timestamp(): no decision here uses the database's now().
--
-- Batches arrive as one JSON array (json_to_recordset): measured twice as fast as
-- psycopg adapting one Python list per column for unnest(), with the same single
-- set-based statement on the server.


-- name: enqueue_one
-- One job (queue.enqueue, the common case) with typed parameters, in one statement that
-- is just the insert and the NOTIFY: for a job without an idempotency key and without
-- remove_on_complete (the others go through enqueue_one_keyed or enqueue_batch), so
-- its row is its `enqueued` event (see get_events) and nothing else is written.
--   %(state)s, %(name)s, %(payload)s (JSON text), %(run_at)s, %(now)s (epoch seconds:
--   run_at, created_at), %(priority)s, %(channel)s, %(max_attempts)s, %(max_stalls)s,
--   %(options)s, %(tags)s (text[]), %(group_key)s, %(tenant)s
--   %(notify_channel)s, %(notify)s   NOTIFY channel and payload (NULL: no NOTIFY)
-- Returns (id, NULL). The NOTIFY is a RETURNING expression: one row, so exactly once.
-- The WHERE clause is a one-time filter (an InitPlan) run before the row is formed: it
-- gives the transaction its xid before the job's id is drawn from the sequence, which
-- read_events relies on (cursor.py). Every enqueue statement has it.
INSERT INTO {schema}.jobs (
    state, name, payload, run_at, created_at, priority, channel, max_attempts, max_stalls,
    options, tags, group_key, tenant)
SELECT %(state)s::text, %(name)s::text, %(payload)s::text,
       to_timestamp(%(run_at)s::float8), to_timestamp(%(now)s::float8),
       %(priority)s::smallint, %(channel)s::text, %(max_attempts)s::integer,
       %(max_stalls)s::integer, %(options)s::text, %(tags)s::text[], %(group_key)s::text,
       %(tenant)s::text
WHERE (SELECT pg_current_xact_id()) IS NOT NULL
RETURNING id, CASE WHEN %(notify)s::text IS NOT NULL
                   THEN pg_notify(%(notify_channel)s, %(notify)s::text) END;


-- name: enqueue_one_keyed
-- One job with an idempotency key, in one statement: the row, its stored `enqueued`
-- event when it has remove_on_complete (its row cannot stand for it: see get_events),
-- one NOTIFY when it was inserted. ON CONFLICT DO NOTHING against the partial unique
-- index (race-safe); a key that exists returns that job's id with created = false.
-- When that job was committed by a concurrent transaction after this statement's
-- snapshot, no row comes back and the caller looks it up (enqueue_lookup).
--   the parameters of enqueue_one, %(remove_on_complete)s and %(idempotency_key)s
-- Returns (id, created).
WITH ins AS (
    INSERT INTO {schema}.jobs AS j (
        state, name, payload, run_at, created_at, priority, channel, max_attempts,
        max_stalls, options, remove_on_complete, idempotency_key, tags, group_key, tenant)
    SELECT %(state)s::text, %(name)s::text, %(payload)s::text,
           to_timestamp(%(run_at)s::float8), to_timestamp(%(now)s::float8),
           %(priority)s::smallint, %(channel)s::text, %(max_attempts)s::integer,
           %(max_stalls)s::integer, %(options)s::text, %(remove_on_complete)s::boolean, %(idempotency_key)s::text,
           %(tags)s::text[], %(group_key)s::text, %(tenant)s::text
    WHERE (SELECT pg_current_xact_id()) IS NOT NULL  -- see enqueue_one
    ON CONFLICT ((coalesce(tenant, '')), idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING j.id, j.name, j.tenant, j.remove_on_complete
),
removable AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT ins.id, 'enqueued', ins.name, ins.tenant, 0, to_timestamp(%(now)s::float8), NULL
    FROM ins
    WHERE ins.remove_on_complete
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, %(notify)s::text)
    WHERE %(notify)s::text IS NOT NULL AND EXISTS (SELECT 1 FROM ins)
)
SELECT ins.id, true FROM ins
WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT e.id, false FROM {schema}.jobs e
WHERE coalesce(e.tenant, '') = coalesce(%(tenant)s::text, '')
  AND e.idempotency_key = %(idempotency_key)s::text
  AND NOT EXISTS (SELECT 1 FROM ins);


-- name: enqueue_batch
-- A batch without idempotency keys (or one job with remove_on_complete) in one
-- statement: the rows, the stored `enqueued` events of jobs with remove_on_complete (as
-- in enqueue_one_keyed), one coalesced NOTIFY.
--   %(jobs)s  JSON array, one object per job in input order: name, payload, and only
--             the fields that differ from the defaults applied here: state ('queued'),
--             run_at (%(now)s), priority (0), channel ('default'), max_attempts (1),
--             max_stalls (1), remove_on_complete (false), tags (none: a JSON array otherwise), options,
--             group_key, tenant (NULL). payload is the job's JSON text embedded as a
--             JSON value: read through a json column, whose text is the input's
--             verbatim (json keeps it as written), so it is neither escaped by the
--             caller nor unescaped here. JSON text that json_to_recordset cannot carry
--             verbatim (a \u escape, which it must decode, and \u0000 it cannot;
--             whitespace around the value; null, read as NULL) comes as the string
--             payload_text instead.
--   %(now)s, %(notify_channel)s, %(notify)s   as in enqueue_one
-- Returns the new ids. The rows are inserted in input order (the ordinality) and one
-- statement draws their ids from the sequence in that order, so the ids in ascending
-- order belong to the inputs in input order: no per-row id mapping on the server.
WITH ins AS (
    INSERT INTO {schema}.jobs (
        state, name, payload, run_at, created_at, priority, channel, max_attempts,
        max_stalls, options, remove_on_complete, tags, group_key, tenant)
    SELECT coalesce(u.state, 'queued'), u.name, coalesce(u.payload_text, u.payload::text),
           coalesce(to_timestamp(u.run_at), to_timestamp(%(now)s::float8)),
           to_timestamp(%(now)s::float8), coalesce(u.priority, 0),
           coalesce(u.channel, 'default'), coalesce(u.max_attempts, 1),
           coalesce(u.max_stalls, 1), u.options,
           coalesce(u.remove_on_complete, false),
           CASE WHEN u.tags IS NULL THEN '{}'::text[]
                ELSE ARRAY(SELECT json_array_elements_text(u.tags)) END,
           u.group_key, u.tenant
    FROM ROWS FROM (json_to_recordset(%(jobs)s::json) AS (
             name text, payload json, payload_text text, state text,
             run_at double precision, priority smallint, channel text,
             max_attempts integer, max_stalls integer, options text,
             remove_on_complete boolean, tags json, group_key text, tenant text)
         ) WITH ORDINALITY AS u(
             name, payload, payload_text, state, run_at, priority, channel, max_attempts,
             max_stalls, options, remove_on_complete, tags, group_key, tenant, ord)
    WHERE (SELECT pg_current_xact_id()) IS NOT NULL  -- see enqueue_one
    ORDER BY u.ord
    RETURNING id, name, tenant, remove_on_complete
),
removable AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT ins.id, 'enqueued', ins.name, ins.tenant, 0, to_timestamp(%(now)s::float8), NULL
    FROM ins
    WHERE ins.remove_on_complete
    ORDER BY ins.id
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, %(notify)s::text)
    WHERE %(notify)s::text IS NOT NULL
)
SELECT ins.id FROM ins
WHERE (SELECT count(*) FROM notified) >= 0;


-- name: enqueue_batch_keyed
-- enqueue_batch for a batch where some job has an idempotency key (keys are unique
-- within the batch: the caller folds duplicates). ON CONFLICT DO NOTHING against the
-- partial unique index (race-safe); a key that already existed in this statement's
-- snapshot comes back with that job's id and created = false; a key committed by a
-- concurrent transaction after the snapshot does not come back at all, and the caller
-- looks it up (enqueue_lookup).
--   the parameters of enqueue_batch; a job object may also carry idempotency_key
-- Returns (id, coalesce(tenant, ''), idempotency_key, created). Rows without a key map
-- back by order (ids ascending, as in enqueue_batch), rows with one by (tenant, key).
-- A key may come back twice (inserted, and found in the snapshot when its old job was
-- deleted meanwhile): the inserted row is the answer.
WITH src AS MATERIALIZED (
    SELECT u.*
    FROM ROWS FROM (json_to_recordset(%(jobs)s::json) AS (
             name text, payload json, payload_text text, state text,
             run_at double precision, priority smallint, channel text,
             max_attempts integer, max_stalls integer, options text,
             remove_on_complete boolean, idempotency_key text, tags json, group_key text,
             tenant text)
         ) WITH ORDINALITY AS u(
             name, payload, payload_text, state, run_at, priority, channel, max_attempts,
             max_stalls, options, remove_on_complete, idempotency_key, tags, group_key,
             tenant, ord)
),
ins AS (
    INSERT INTO {schema}.jobs AS j (
        state, name, payload, run_at, created_at, priority, channel, max_attempts,
        max_stalls, options, remove_on_complete, idempotency_key, tags, group_key, tenant)
    SELECT coalesce(s.state, 'queued'), s.name, coalesce(s.payload_text, s.payload::text),
           coalesce(to_timestamp(s.run_at), to_timestamp(%(now)s::float8)),
           to_timestamp(%(now)s::float8), coalesce(s.priority, 0),
           coalesce(s.channel, 'default'), coalesce(s.max_attempts, 1),
           coalesce(s.max_stalls, 1), s.options,
           coalesce(s.remove_on_complete, false), s.idempotency_key,
           CASE WHEN s.tags IS NULL THEN '{}'::text[]
                ELSE ARRAY(SELECT json_array_elements_text(s.tags)) END,
           s.group_key, s.tenant
    FROM src s
    WHERE (SELECT pg_current_xact_id()) IS NOT NULL  -- see enqueue_one
    ORDER BY s.ord
    ON CONFLICT ((coalesce(tenant, '')), idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING j.id, j.name, j.tenant, j.idempotency_key, j.remove_on_complete
),
removable AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT ins.id, 'enqueued', ins.name, ins.tenant, 0, to_timestamp(%(now)s::float8), NULL
    FROM ins
    WHERE ins.remove_on_complete
    ORDER BY ins.id
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, %(notify)s::text)
    WHERE %(notify)s::text IS NOT NULL AND EXISTS (SELECT 1 FROM ins)
)
SELECT ins.id, coalesce(ins.tenant, ''), ins.idempotency_key, true FROM ins
WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT e.id, coalesce(s.tenant, ''), s.idempotency_key, false
FROM src s
CROSS JOIN LATERAL (
    SELECT e.id FROM {schema}.jobs e
    WHERE coalesce(e.tenant, '') = coalesce(s.tenant, '')
      AND e.idempotency_key = s.idempotency_key
    LIMIT 1  -- unique anyway; keeps this one probe of the key's index per key
) e
WHERE s.idempotency_key IS NOT NULL;


-- name: store_enqueued
-- The stored `enqueued` events of jobs just inserted whose rows cannot stand for them
-- (see get_events): jobs with remove_on_fail, whose rows vanish when they fail finally.
-- Run after their insert, in its transaction; a job whose event is already stored
-- (remove_on_complete too) is skipped.
--   %(ids)s bigint[]
-- Returns how many were stored.
WITH stored AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT j.id, 'enqueued', j.name, j.tenant, 0, j.created_at, NULL
    FROM {schema}.jobs j
    WHERE j.id = ANY (%(ids)s::bigint[])
      AND NOT EXISTS (SELECT 1 FROM {schema}.job_events s
                      WHERE s.job_id = j.id AND s.type = 'enqueued' AND s.data IS NULL)
    ORDER BY j.id
    RETURNING 1
)
SELECT count(*) FROM stored;


-- name: enqueue_lookup
-- Ids of existing jobs by (tenant, idempotency key); a new statement, so it sees a
-- concurrent enqueue that committed after enqueue's snapshot.
--   %(tenants)s text[] ('' for none), %(keys)s text[]
SELECT k.tenant, k.key, j.id
FROM unnest(%(tenants)s::text[], %(keys)s::text[]) AS k(tenant, key)
JOIN {schema}.jobs j ON coalesce(j.tenant, '') = k.tenant AND j.idempotency_key = k.key;


-- name: claim_steps
-- The claim's steps (CTEs), shared by `claim` and `complete_claim`. Claim up to
-- %(limit)s due jobs in one statement: lock up to %(scan)s candidates
-- with SKIP LOCKED (a few more than the limit, so a group's extra members do not leave
-- the batch short), keep at most one per group, take each group with an INSERT … ON
-- CONFLICT DO NOTHING into running_groups (race-safe: a group taken by a concurrent
-- claimer that committed after this statement's snapshot conflicts; it is not judged
-- from the stale snapshot), flip the rows to running and store their `started` events.
--   %(now)s, %(lease_expires_at)s  epoch seconds
--   %(token)s, %(worker_id)s, %(limit)s, %(scan)s
--   %(include)s, %(exclude)s        text[] or NULL
--   the channel filter placeholder below: one of the claim_filter_* fragments
-- Groups are inserted in group_key order so two claimers never wait on each other in
-- a cycle.
cand AS MATERIALIZED (
    SELECT j.id, j.group_key, j.priority, j.run_at
    FROM {schema}.jobs j
    WHERE j.state = 'queued'
      AND j.run_at <= to_timestamp(%(now)s)
      {channel_filter}
      AND (%(include)s::text[] IS NULL OR j.name = ANY (%(include)s::text[]))
      AND (%(exclude)s::text[] IS NULL OR j.name <> ALL (%(exclude)s::text[]))
      AND NOT EXISTS (SELECT 1 FROM {schema}.paused_channels p WHERE p.channel = '')
      AND j.channel NOT IN (SELECT p.channel FROM {schema}.paused_channels p)
      AND (j.group_key IS NULL
           OR NOT EXISTS (SELECT 1 FROM {schema}.running_groups r
                          WHERE r.group_key = j.group_key))
    ORDER BY j.priority, j.run_at, j.id
    LIMIT %(scan)s
    FOR UPDATE OF j SKIP LOCKED
),
firsts AS MATERIALIZED (
    SELECT x.id, x.group_key
    FROM (SELECT c.id, c.group_key, c.priority, c.run_at,
                 row_number() OVER (PARTITION BY c.group_key
                                    ORDER BY c.priority, c.run_at, c.id) AS rn
          FROM cand c) x
    WHERE x.group_key IS NULL OR x.rn = 1
    ORDER BY x.priority, x.run_at, x.id
    LIMIT %(limit)s
),
grouped AS (
    INSERT INTO {schema}.running_groups (group_key, job_id)
    SELECT f.group_key, f.id FROM firsts f WHERE f.group_key IS NOT NULL
    ORDER BY f.group_key
    ON CONFLICT (group_key) DO NOTHING
    RETURNING job_id
),
picked AS (
    SELECT f.id FROM firsts f WHERE f.group_key IS NULL
    UNION ALL
    SELECT g.job_id FROM grouped g
),
claimed AS (
    UPDATE {schema}.jobs j
    SET state = 'running',
        attempts = j.attempts + 1,
        lease_token = %(token)s,
        lease_expires_at = to_timestamp(%(lease_expires_at)s),
        started_at = to_timestamp(%(now)s),
        worker_id = %(worker_id)s,
        cancel_requested = false
    FROM picked p
    WHERE j.id = p.id
    RETURNING j.id, j.name, j.payload, j.attempts, j.max_attempts, j.channel, j.priority,
              j.tenant, j.group_key, j.tags, j.options, j.run_at, j.created_at,
              j.remove_on_complete, j.stalls, j.max_stalls
),
started AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT c.id, 'started', c.name, c.tenant, c.attempts, to_timestamp(%(now)s), NULL
    FROM claimed c
    ORDER BY c.id
)

-- name: claim_select
-- The claimed jobs, in claim order. A claim on its own commits without waiting for the
-- WAL flush (set_config(…, true) lasts for this statement's transaction only): a claim
-- that a server crash loses only puts its jobs back in the queue (the worker's outcome
-- is then fenced out and the job runs again: at least once, as promised), and the
-- start of a job after a wake-up no longer waits for a disk flush.
SELECT c.id, c.name, c.payload, c.attempts, c.max_attempts, c.channel, c.priority,
       c.tenant, c.group_key, c.tags, c.options, extract(epoch FROM c.run_at)::float8,
       extract(epoch FROM c.created_at)::float8, c.remove_on_complete, c.stalls,
       c.max_stalls
FROM claimed c, (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
ORDER BY c.priority, c.run_at, c.id;

-- name: claim_filter_all
-- (no channel filter: every channel; uses jobs_claim_idx)

-- name: claim_filter_one
-- one channel: an ordered scan of jobs_claim_channel_idx
AND j.channel = %(channel)s

-- name: claim_filter_many
-- several channels: jobs_claim_idx (claim order) filtered by channel. Written so that it
-- cannot be an index condition: `channel = ANY (…)` on jobs_claim_channel_idx would
-- read every queued job of those channels and sort them, which the planner picks
-- whenever its statistics lag behind a backlog (see test_claim_plan.py).
AND array_position(%(channels)s::text[], j.channel) IS NOT NULL


-- name: complete_steps
-- The steps (CTEs) of `complete_many` and `complete_claim`: apply a batch of fenced
-- outcomes in one statement.
--   %(outcomes)s  JSON array of {i, id, token, state, at, event, run_at, result, error,
--                 refund, stall, remove, expired_before, data} (and wait_token, in a
--                 batch with a wait)
--   %(notify_channel)s, %(notify)s  NOTIFY when some outcome requeues (NULL: never)
-- remove = true deletes the row, its logs, steps and tokens; its events stay readable
-- by read_events and are pruned later through removed_jobs (prune).
-- A row changes only while it is still running under that token (and, for a rescue,
-- its lease expired by expired_before). `locked` takes the row locks in id order (no
-- deadlock with heartbeats) and reads the newest row versions, so the fence is checked
-- on what is current, not on the statement's snapshot. Ids go in as an array: rows are
-- found by primary key (a state filter there would let the planner walk every running
-- row through the lease index instead). Of several outcomes for one job, the first
-- that passes the fence applies. `gate` makes every job lock come before the
-- running_groups deletes (a claimer may wait on those; it must never hold a job row
-- this statement still needs).
-- A batch with an outcome to `waiting` is applied by the same steps with the fragments
-- of durable.sql in the braced wait placeholders (complete_wait_*: its `o` is then
-- built after the tokens waited on are locked); any other batch gets the plain `o`
-- (complete_input) and nothing in the others, so it pays nothing for durable waits.
{wait_input}
locked AS MATERIALIZED (
    SELECT j.id, j.state, j.lease_token, j.lease_expires_at, j.name, j.tenant, j.attempts,
           j.group_key, j.cancel_requested
    FROM {schema}.jobs j
    WHERE j.id = ANY (ARRAY(SELECT o.id FROM o))
      {wait_gate}
    ORDER BY j.id
    FOR UPDATE
),
-- `instead`: what the outcome is stored as when not as asked, given back to the caller
-- (Outcome): 'cancelled' (a cancel requested while the job ran wins over an outcome that
-- would run it again: `again`, Outcome.yields_to_cancel), 'resumed' (a wait whose token
-- was done).
tgt AS MATERIALIZED (
    SELECT DISTINCT ON (l.id)
           l.id, l.name, l.tenant, l.attempts, l.group_key, o.i,
           CASE WHEN x.cancel THEN 'cancelled' ELSE o.state END AS state,
           o.at,
           CASE WHEN x.cancel THEN 'cancelled' ELSE o.event END AS event,
           o.run_at, o.result, o.error, o.refund, o.stall, o.remove,
           CASE WHEN x.cancel THEN NULL ELSE o.data END AS data,
           CASE WHEN x.cancel THEN 'cancelled' WHEN o.event = 'resumed' THEN 'resumed'
           END AS instead
           {wait_columns}
    FROM locked l
    JOIN o ON o.id = l.id
    CROSS JOIN LATERAL (SELECT l.cancel_requested AND o.again AS cancel) x
    WHERE l.state = 'running'
      AND l.lease_token = o.token
      AND (o.expired_before IS NULL OR l.lease_expires_at <= to_timestamp(o.expired_before))
    ORDER BY l.id, o.i
),
gate AS MATERIALIZED (
    SELECT count(*) AS n FROM tgt
),
updated AS (
    UPDATE {schema}.jobs j
    SET state = t.state,
        attempts = CASE WHEN t.refund THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
        stalls = CASE WHEN t.stall THEN j.stalls + 1 ELSE j.stalls END,
        run_at = coalesce(to_timestamp(t.run_at), j.run_at),
        finished_at = CASE WHEN t.state IN ('completed', 'failed', 'cancelled')
                           THEN to_timestamp(t.at) END,
        result = coalesce(t.result, j.result),
        errors = CASE WHEN t.error IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(t.error::jsonb) END,
        progress = CASE WHEN t.state = 'completed' THEN 100
                        WHEN t.state IN ('queued', 'scheduled') THEN 0
                        ELSE j.progress END,
        lease_token = NULL,
        lease_expires_at = NULL,
        worker_id = NULL,
        {wait_set}
        cancel_requested = CASE WHEN t.state IN ('queued', 'scheduled')
                                  OR t.instead = 'cancelled' THEN false
                                ELSE j.cancel_requested END
    FROM tgt t
    WHERE j.id = t.id AND NOT t.remove
),
removed AS (
    DELETE FROM {schema}.jobs j USING tgt t
    WHERE j.id = t.id AND t.remove
),
removed_marks AS (
    INSERT INTO {schema}.removed_jobs (job_id, removed_at)
    SELECT t.id, to_timestamp(t.at) FROM tgt t WHERE t.remove
    ON CONFLICT (job_id) DO NOTHING
),
removed_logs AS (
    DELETE FROM {schema}.job_logs l USING tgt t
    WHERE (SELECT n FROM gate) >= 0 AND l.job_id = t.id AND t.remove
),
removed_steps AS (
    DELETE FROM {schema}.job_steps s USING tgt t
    WHERE (SELECT n FROM gate) >= 0 AND s.job_id = t.id AND t.remove
),
removed_tokens AS (
    DELETE FROM {schema}.job_tokens k USING tgt t
    WHERE (SELECT n FROM gate) >= 0 AND k.job_id = t.id AND t.remove
),
freed AS (
    DELETE FROM {schema}.running_groups r USING tgt t
    WHERE (SELECT n FROM gate) >= 0 AND r.group_key = t.group_key AND r.job_id = t.id
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT t.id, t.event, t.name, t.tenant, t.attempts, to_timestamp(t.at), t.data
    FROM tgt t
    ORDER BY t.i
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, %(notify)s::text)
    WHERE %(notify)s::text IS NOT NULL
      AND EXISTS (SELECT 1 FROM tgt t WHERE t.state = 'queued' AND NOT t.remove)
)
{wait_tail}

-- name: complete_input
-- The outcomes of a batch without a wait (see complete_steps).
o AS (
    SELECT u.*
    FROM json_to_recordset(%(outcomes)s::json) AS u(
        i integer, id bigint, token text, state text, at double precision, event text,
        run_at double precision, result text, error text, refund boolean, stall boolean,
        remove boolean, expired_before double precision, data text, again boolean)
),

-- name: complete_select
-- complete_many's result: the input positions of the outcomes that applied, and what
-- each was stored as when not as asked (tgt.instead).
SELECT t.i, t.instead FROM tgt t
WHERE (SELECT count(*) FROM notified) >= 0;


-- name: complete_claim_select
-- complete_claim (the steps of complete_many, then those of claim, in one statement and
-- one commit): one row per claimed job, or a single row of NULL job columns when none
-- was claimed; every row carries the input positions of the outcomes that applied and
-- whether they requeued a job or freed a group (the caller then wakes its fetcher: the
-- claim's snapshot cannot see those changes), and last the outcomes stored as something
-- else (position -> tgt.instead, or NULL).
SELECT a.applied, a.woke,
       c.id, c.name, c.payload, c.attempts, c.max_attempts, c.channel, c.priority,
       c.tenant, c.group_key, c.tags, c.options, extract(epoch FROM c.run_at)::float8,
       extract(epoch FROM c.created_at)::float8, c.remove_on_complete, c.stalls,
       c.max_stalls, a.changed
FROM (SELECT array_agg(t.i) AS applied,
             bool_or(t.group_key IS NOT NULL
                     OR (t.state = 'queued' AND NOT t.remove)) AS woke,
             jsonb_object_agg(t.i, t.instead) FILTER (WHERE t.instead IS NOT NULL) AS changed
      FROM tgt t
      WHERE (SELECT count(*) FROM notified) >= 0) a
LEFT JOIN claimed c ON true
ORDER BY c.priority, c.run_at, c.id;


-- name: heartbeat
-- Extend the leases still held (running, same token) in one statement; returns those
-- rows with their cancel flag. Locks in id order, like complete_many; ids go in as an
-- array so the rows are found by primary key whatever the planner thinks of the batch.
--   %(ids)s bigint[], %(tokens)s text[], %(lease_expires_at)s epoch seconds
WITH h AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS h(id, token)
),
held AS MATERIALIZED (
    SELECT j.id, j.state, j.lease_token
    FROM {schema}.jobs j
    WHERE j.id = ANY (%(ids)s::bigint[])
    ORDER BY j.id
    FOR UPDATE
)
UPDATE {schema}.jobs j
SET lease_expires_at = to_timestamp(%(lease_expires_at)s)
FROM held
JOIN h ON h.id = held.id AND h.token = held.lease_token
WHERE j.id = held.id AND held.state = 'running'
RETURNING j.id, j.cancel_requested;


-- name: cancel_requests
--   %(ids)s bigint[]
SELECT id FROM {schema}.jobs
WHERE id = ANY (%(ids)s::bigint[]) AND state = 'running' AND cancel_requested;


-- name: set_progress
-- Fenced progress update plus a `progress` event.
--   %(id)s, %(token)s, %(progress)s, %(now)s
WITH u AS (
    UPDATE {schema}.jobs
    SET progress = %(progress)s
    WHERE id = %(id)s AND state = 'running' AND lease_token = %(token)s
    RETURNING id, name, tenant, attempts, progress
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT u.id, 'progress', u.name, u.tenant, u.attempts, to_timestamp(%(now)s),
           json_build_object('progress', u.progress)::text
    FROM u
)
SELECT count(*) FROM u;


-- name: append_logs
-- Fenced like an outcome: a line is stored only while its job is running under its
-- token (a stale worker's lines, and those of a job that finished or is gone, are
-- dropped).
--   %(logs)s JSON array of {i, job_id, token, at, level, message, attempt}
INSERT INTO {schema}.job_logs (job_id, attempt, at, level, message)
SELECT l.job_id, l.attempt, to_timestamp(l.at), l.level, l.message
FROM json_to_recordset(%(logs)s::json) AS l(
    i integer, job_id bigint, token text, at double precision, level text, message text,
    attempt integer)
WHERE EXISTS (SELECT 1 FROM {schema}.jobs j
              WHERE j.id = l.job_id AND j.state = 'running' AND j.lease_token = l.token)
ORDER BY l.i;


-- name: expired_leases
--   %(now)s, %(limit)s
SELECT id, lease_token, name, tenant, attempts, max_attempts, options, cancel_requested,
       stalls, max_stalls
FROM {schema}.jobs
WHERE state = 'running' AND lease_expires_at <= to_timestamp(%(now)s)
ORDER BY lease_expires_at, id
LIMIT %(limit)s;


-- name: promote_due
-- scheduled → queued for run_at <= %(until)s (now + horizon), at most %(limit)s rows,
-- SKIP LOCKED so every process may run it. Returns the count and the earliest promoted
-- run_at still after %(now)s. One NOTIFY when anything moved.
-- Also deletes running_groups rows whose job is no longer running: every transition
-- out of running deletes its row, so this only repairs rows left by a hand-edited
-- database. It is race-free: a row and its job's flip to running commit together and
-- neither is visible without the other.
WITH due AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE state = 'scheduled' AND run_at <= to_timestamp(%(until)s)
    ORDER BY run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
promoted AS (
    UPDATE {schema}.jobs j SET state = 'queued'
    FROM due WHERE j.id = due.id
    RETURNING j.run_at
),
stale_groups AS (
    DELETE FROM {schema}.running_groups r
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.jobs j
                      WHERE j.id = r.job_id AND j.state = 'running')
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, '')
    WHERE EXISTS (SELECT 1 FROM promoted)
)
SELECT count(*),
       extract(epoch FROM min(p.run_at) FILTER (WHERE p.run_at > to_timestamp(%(now)s)))::float8
FROM promoted p
WHERE (SELECT count(*) FROM notified) >= 0;


-- name: prune
-- Delete up to %(limit)s jobs in %(state)s finished before %(before)s, with their
-- events, logs, steps and tokens, in one statement; also up to %(limit)s removed jobs'
-- leftover events (remove_on_complete keeps them for read_events until then). Returns
-- the jobs deleted (id, name, tenant, attempts: their `removed` events, emitted by the
-- core). The literal state list lets the generic plan use jobs_prune_idx (a parameter
-- alone cannot prove its predicate): without it every sweep read every job, the
-- upcoming and waiting ones included.
WITH doomed AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE state = %(state)s AND state IN ('completed', 'failed', 'cancelled')
      AND finished_at < to_timestamp(%(before)s)
    ORDER BY finished_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
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
),
removed AS MATERIALIZED (
    SELECT job_id FROM {schema}.removed_jobs
    WHERE removed_at < to_timestamp(%(before)s)
    ORDER BY removed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
removed_gone AS (
    DELETE FROM {schema}.removed_jobs r USING removed x WHERE r.job_id = x.job_id
),
removed_events AS (
    DELETE FROM {schema}.job_events e USING removed x WHERE e.job_id = x.job_id
)
SELECT g.id, g.name, g.tenant, g.attempts FROM gone g ORDER BY g.id;


-- name: acquire_lock
-- Take or renew a named lease: a row comes back when we hold it.
--   %(name)s, %(owner)s, %(now)s, %(expires_at)s
INSERT INTO {schema}.locks AS l (name, owner, expires_at)
VALUES (%(name)s, %(owner)s, to_timestamp(%(expires_at)s))
ON CONFLICT (name) DO UPDATE
SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
WHERE l.owner = EXCLUDED.owner OR l.expires_at <= to_timestamp(%(now)s)
RETURNING l.owner;


-- name: get_job
SELECT id, name, payload, state, attempts, max_attempts, progress, result, errors, tags,
       group_key, tenant, channel, priority, run_at, created_at, started_at, finished_at,
       options, idempotency_key, stalls, wait_token
FROM {schema}.jobs
WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s::text);


-- name: list_jobs
-- Newest first, paging by id. %(tags)s with %(tag_mode)s: any | all | exact (same set)
-- | none. %(name_prefix)s: names starting with it, literally (starts_with: no LIKE
-- wildcards).
SELECT id, name, payload, state, attempts, max_attempts, progress, result, errors, tags,
       group_key, tenant, channel, priority, run_at, created_at, started_at, finished_at,
       options, idempotency_key, stalls, wait_token
FROM {schema}.jobs j
WHERE (%(state)s::text IS NULL OR j.state = %(state)s::text)
  AND (%(name)s::text IS NULL OR j.name = %(name)s::text)
  AND (%(name_prefix)s::text IS NULL OR starts_with(j.name, %(name_prefix)s::text))
  AND (%(channel)s::text IS NULL OR j.channel = %(channel)s::text)
  AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s::text)
  AND (%(before_id)s::bigint IS NULL OR j.id < %(before_id)s::bigint)
  AND (%(tags)s::text[] IS NULL
       OR (%(tag_mode)s::text = 'any' AND j.tags && %(tags)s::text[])
       OR (%(tag_mode)s::text = 'all' AND j.tags @> %(tags)s::text[])
       OR (%(tag_mode)s::text = 'exact' AND j.tags @> %(tags)s::text[]
                                        AND j.tags <@ %(tags)s::text[])
       OR (%(tag_mode)s::text = 'none' AND NOT j.tags && %(tags)s::text[]))
ORDER BY j.id DESC
LIMIT %(limit)s;


-- name: counts
SELECT state, count(*) FROM {schema}.jobs
WHERE %(channel)s::text IS NULL OR channel = %(channel)s::text
GROUP BY state;


-- name: channel_stats
-- Jobs per (channel, state) and, per channel, the run_at of the oldest queued job.
SELECT channel, state, count(*),
       extract(epoch FROM min(run_at) FILTER (WHERE state = 'queued'))::float8
FROM {schema}.jobs
GROUP BY channel, state
ORDER BY channel, state;


-- name: cancel
-- Upcoming → cancelled (with a `cancelled` event; a waiting job stops waiting:
-- wait_token cleared); running → cancel_requested (the worker ends it). Returns the
-- state before (NULL: no such job) and after.
WITH cur AS MATERIALIZED (
    SELECT id, state FROM {schema}.jobs WHERE id = %(id)s FOR UPDATE
),
u AS (
    UPDATE {schema}.jobs j
    SET state = CASE WHEN cur.state = 'running' THEN 'running' ELSE 'cancelled' END,
        cancel_requested = (cur.state = 'running'),
        finished_at = CASE WHEN cur.state = 'running' THEN j.finished_at
                           ELSE to_timestamp(%(now)s) END,
        wait_token = NULL
    FROM cur
    WHERE j.id = cur.id AND cur.state IN ('scheduled', 'queued', 'waiting', 'running')
    RETURNING j.id, j.name, j.tenant, j.attempts, j.state
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT u.id, 'cancelled', u.name, u.tenant, u.attempts, to_timestamp(%(now)s), NULL
    FROM u WHERE u.state = 'cancelled'
)
SELECT (SELECT state FROM cur), (SELECT state FROM u);


-- name: cancel_jobs
-- Cancel upcoming jobs matching the filter (same filter as list_jobs, no limit).
WITH u AS (
    UPDATE {schema}.jobs j
    SET state = 'cancelled', finished_at = to_timestamp(%(now)s), wait_token = NULL
    WHERE j.state IN ('scheduled', 'queued', 'waiting')
      AND (%(state)s::text IS NULL OR j.state = %(state)s::text)
      AND (%(name)s::text IS NULL OR j.name = %(name)s::text)
      AND (%(name_prefix)s::text IS NULL OR starts_with(j.name, %(name_prefix)s::text))
      AND (%(channel)s::text IS NULL OR j.channel = %(channel)s::text)
      AND (%(tenant)s::text IS NULL OR j.tenant = %(tenant)s::text)
      AND (%(before_id)s::bigint IS NULL OR j.id < %(before_id)s::bigint)
      AND (%(tags)s::text[] IS NULL
           OR (%(tag_mode)s::text = 'any' AND j.tags && %(tags)s::text[])
           OR (%(tag_mode)s::text = 'all' AND j.tags @> %(tags)s::text[])
           OR (%(tag_mode)s::text = 'exact' AND j.tags @> %(tags)s::text[]
                                            AND j.tags <@ %(tags)s::text[])
           OR (%(tag_mode)s::text = 'none' AND NOT j.tags && %(tags)s::text[]))
    RETURNING j.id, j.name, j.tenant, j.attempts
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT u.id, 'cancelled', u.name, u.tenant, u.attempts, to_timestamp(%(now)s), NULL
    FROM u ORDER BY u.id
)
SELECT count(*) FROM u;


-- name: retry
-- failed / cancelled → queued now, with fresh attempts; errors are kept. Returns the
-- state before (NULL: no such job) and whether it was requeued. Its `enqueued` event
-- is stored, with data {"retry": true} (the row only stands for the first one, see
-- get_events).
WITH cur AS MATERIALIZED (
    SELECT id, state FROM {schema}.jobs WHERE id = %(id)s FOR UPDATE
),
u AS (
    UPDATE {schema}.jobs j
    SET state = 'queued', attempts = 0, stalls = 0, run_at = to_timestamp(%(now)s),
        progress = 0, result = NULL, started_at = NULL, finished_at = NULL,
        cancel_requested = false, deps_left = NULL  -- (no longer waits on dependencies)
    FROM cur
    WHERE j.id = cur.id AND cur.state IN ('failed', 'cancelled')
    RETURNING j.id, j.name, j.tenant
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT u.id, 'enqueued', u.name, u.tenant, 0, to_timestamp(%(now)s), '{"retry": true}'
    FROM u
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, '') WHERE EXISTS (SELECT 1 FROM u)
)
SELECT (SELECT state FROM cur), EXISTS (SELECT 1 FROM u)
WHERE (SELECT count(*) FROM notified) >= 0;


-- name: pause
-- Pause one channel, or ('': never a valid channel name) every channel, including
-- channels that do not exist yet; the claim skips everything while '' has a row.
INSERT INTO {schema}.paused_channels (channel) VALUES (%(channel)s)
ON CONFLICT DO NOTHING;


-- name: resume
-- Resume one channel, or (%(channel)s NULL) every paused channel and ''.
WITH gone AS (
    DELETE FROM {schema}.paused_channels
    WHERE %(channel)s::text IS NULL OR channel = %(channel)s::text
    RETURNING channel
)
SELECT pg_notify(%(notify_channel)s, '') WHERE EXISTS (SELECT 1 FROM gone);


-- name: get_logs
SELECT at, level, message, attempt FROM {schema}.job_logs
WHERE job_id = %(id)s ORDER BY id;


-- name: get_events
-- A job's events, oldest first. A job's `enqueued` event is not stored: its row is that
-- event (created_at), which saves a row per enqueue. It is stored, and the row then
-- stands for nothing, where the row cannot carry it: a job with remove_on_complete or
-- remove_on_fail (its row vanishes when it completes or fails finally, its events stay
-- readable until pruned, see removed_jobs; store_enqueued), and any job enqueued before conveyor stopped storing them (so an
-- upgraded database shows no duplicate). A retry's `enqueued` event (data
-- {"retry": true}) is always stored.
SELECT type, job_id, job_name, tenant, attempt, at, data FROM (
    SELECT 0 AS src, 0::bigint AS id, 'enqueued' AS type, j.id AS job_id,
           j.name AS job_name, j.tenant, 0 AS attempt, j.created_at AS at, NULL::text AS data
    FROM {schema}.jobs j
    WHERE j.id = %(id)s
      AND NOT EXISTS (SELECT 1 FROM {schema}.job_events s
                      WHERE s.job_id = j.id AND s.type = 'enqueued' AND s.data IS NULL)
    UNION ALL
    SELECT 1, e.id, e.type, e.job_id, e.job_name, e.tenant, e.attempt, e.at, e.data
    FROM {schema}.job_events e
    WHERE e.job_id = %(id)s
) x
ORDER BY src, id;


-- name: read_events
-- The two streams of read_events, read with one snapshot: stored events after
-- %(after)s (job_row = false), and the jobs after %(after_job)s (job_row = true), whose
-- rows are their `enqueued` events (type NULL when the job's `enqueued` event is stored
-- instead, see get_events: the row then only moves the cursor); at most %(limit)s of
-- each, in id order. Every row carries the snapshot's xid bounds and the database time,
-- so the caller can tell an id gap that a transaction in flight will fill from one that
-- a rolled-back transaction or a deleted job left for good (cursor.py).
SELECT x.*,
       pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       extract(epoch FROM statement_timestamp())::float8 AS db_now
FROM (
    (SELECT false AS job_row, e.id, e.type, e.job_id, e.job_name, e.tenant, e.attempt,
            e.at, e.data
     FROM {schema}.job_events e
     WHERE e.id > %(after)s
     ORDER BY e.id
     LIMIT %(limit)s)
    UNION ALL
    (SELECT true, j.id,
            CASE WHEN NOT EXISTS (SELECT 1 FROM {schema}.job_events s
                                  WHERE s.job_id = j.id AND s.type = 'enqueued'
                                    AND s.data IS NULL)
                 THEN 'enqueued' END,
            j.id, j.name, j.tenant, 0, j.created_at, NULL::text
     FROM {schema}.jobs j
     WHERE j.id > %(after_job)s
     ORDER BY j.id
     LIMIT %(limit)s)
) x;


-- name: events_head
-- Where a new read_events stream starts: the newest stored event and the newest job.
SELECT (SELECT coalesce(max(id), 0) FROM {schema}.job_events),
       (SELECT coalesce(max(id), 0) FROM {schema}.jobs);


-- name: upsert_cron
-- Create or replace a schedule, keeping last_run_at / last_job_id.
INSERT INTO {schema}.cron_schedules AS c (
    name, expression, job, payload, timezone, paused, allow_overlap, catch_up, options,
    next_run_at, last_run_at, last_job_id)
VALUES (%(name)s, %(expression)s, %(job)s, %(payload)s, %(timezone)s, %(paused)s,
        %(allow_overlap)s, %(catch_up)s, %(options)s, to_timestamp(%(next_run_at)s),
        to_timestamp(%(last_run_at)s), %(last_job_id)s)
ON CONFLICT (name) DO UPDATE
SET expression = EXCLUDED.expression, job = EXCLUDED.job, payload = EXCLUDED.payload,
    timezone = EXCLUDED.timezone, paused = EXCLUDED.paused,
    allow_overlap = EXCLUDED.allow_overlap, catch_up = EXCLUDED.catch_up,
    options = EXCLUDED.options, next_run_at = EXCLUDED.next_run_at;


-- name: list_cron
SELECT name, expression, job, payload, timezone, paused, allow_overlap, catch_up, options,
       extract(epoch FROM next_run_at)::float8, extract(epoch FROM last_run_at)::float8,
       last_job_id
FROM {schema}.cron_schedules
ORDER BY name;


-- name: delete_cron
DELETE FROM {schema}.cron_schedules WHERE name = ANY (%(names)s::text[]);


-- name: set_cron_paused
UPDATE {schema}.cron_schedules
SET paused = %(paused)s,
    next_run_at = coalesce(to_timestamp(%(next_run_at)s), next_run_at)
WHERE name = %(name)s;


-- name: fire_cron
-- The compare-and-swap of fire_cron: wins only while next_run_at is still the value
-- the caller read (to the millisecond: it made a round trip through a float).
UPDATE {schema}.cron_schedules
SET next_run_at = to_timestamp(%(new_next)s), last_run_at = to_timestamp(%(tick)s)
WHERE name = %(name)s
  AND NOT paused
  AND next_run_at BETWEEN to_timestamp(%(expected)s) - interval '1 millisecond'
                      AND to_timestamp(%(expected)s) + interval '1 millisecond'
RETURNING name;


-- name: cron_set_job
UPDATE {schema}.cron_schedules SET last_job_id = %(job_id)s WHERE name = %(name)s;
