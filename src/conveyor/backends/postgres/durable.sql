-- conveyor's PostgreSQL queries for durable execution (steps, waits, tokens), loaded with
-- queries.sql and under the same rules (see its head). The contract is in
-- conveyor.backends.records and Outcome.wait_token.
--
-- How a completion never races a suspend: complete_token and a batch that suspends a
-- job on a token both lock the token's row before they touch its job. A suspend locks
-- it (FOR UPDATE, which reads its newest version) and decides from it whether the job
-- waits; complete_token updates it in one statement and resumes the job in a second
-- one of the same transaction, whose snapshot is taken after that lock was granted.
-- So whichever comes second sees what the other committed: a suspend that comes second
-- sees the token completed and requeues the job at once; a completion that comes
-- second sees the job waiting on it and requeues it. resume_due takes its locks with
-- SKIP LOCKED, so a job whose token is being completed is left to that completion.
-- Lock order is token, then job everywhere one waits, so no two of these deadlock.


-- name: complete_wait_input
-- The outcomes of a batch with a wait (the `o` of complete_steps), given wait_token.
-- `wtok` locks the tokens waited on, in id order, before `locked` takes any job row
-- (see complete_wait_gate); `o` then turns each wait on a token that is no longer
-- waitable (not pending, or expires_at <= at: complete_token refuses it from then on)
-- into a requeue at `at` with a `resumed` event, and names the pending token to mark
-- expired.
o_in AS (
    SELECT u.*
    FROM json_to_recordset(%(outcomes)s::json) AS u(
        i integer, id bigint, token text, state text, at double precision, event text,
        run_at double precision, result text, error text, refund boolean, stall boolean,
        remove boolean, expired_before double precision, data text, wait_token text,
        again boolean)
),
wtok AS MATERIALIZED (
    SELECT k.id, k.state, k.expires_at
    FROM {schema}.job_tokens k
    WHERE k.id = ANY (ARRAY(SELECT w.wait_token FROM o_in w
                            WHERE w.state = 'waiting' AND w.wait_token IS NOT NULL))
    ORDER BY k.id
    FOR UPDATE
),
o AS MATERIALIZED (
    SELECT x.i, x.id, x.token,
           CASE WHEN x.woken THEN 'queued' ELSE x.state END AS state,
           x.at,
           CASE WHEN x.woken THEN 'resumed' ELSE x.event END AS event,
           CASE WHEN x.woken THEN x.at ELSE x.run_at END AS run_at,
           x.result, x.error, x.refund, x.stall, x.remove, x.expired_before,
           CASE WHEN x.woken THEN '{"reason": "token"}' ELSE x.data END AS data,
           x.again,
           CASE WHEN x.state = 'waiting' AND NOT x.woken THEN x.wait_token END AS wait_token,
           CASE WHEN x.woken AND x.token_state = 'pending' THEN x.wait_token END
               AS expire_token
    FROM (SELECT w.*, k.state AS token_state,
                 (w.state = 'waiting' AND w.wait_token IS NOT NULL
                  AND (k.state IS DISTINCT FROM 'pending'
                       OR coalesce(k.expires_at <= to_timestamp(w.at), false))) AS woken
          FROM o_in w
          LEFT JOIN wtok k ON k.id = w.wait_token) x
),

-- name: complete_wait_gate
-- A one-time filter of `locked`: every token lock is taken before the first job lock.
AND (SELECT count(*) FROM wtok) >= 0

-- name: complete_wait_columns
-- Carried from `o` into `tgt`.
, o.wait_token, o.expire_token

-- name: complete_wait_set
-- The job's wait_token: the token of a job now waiting, else none.
wait_token = CASE WHEN t.instead = 'cancelled' THEN NULL ELSE t.wait_token END,

-- name: complete_wait_tail
-- A pending token whose wait came too late (it expired) is marked expired.
, wait_expired AS (
    UPDATE {schema}.job_tokens k
    SET state = 'expired'
    WHERE k.id = ANY (ARRAY(SELECT t.expire_token FROM tgt t
                            WHERE t.expire_token IS NOT NULL))
      AND k.state = 'pending'
)


-- name: save_step
-- Store a step, fenced like an outcome, and its token (if %(token_id)s is not NULL)
-- when the step is new; a step already stored under that name stands (and no token
-- is stored then: the first save stored its own). The job row is share-locked, so an
-- outcome that ends the run concurrently (a removal deletes steps) either comes first
-- (and the fence fails) or waits for this one.
--   %(job_id)s, %(token)s, %(name)s, %(result)s, %(at)s
--   %(token_id)s, %(expires_at)s (NULL: never), %(tags)s text[]
-- Returns 1 when the fence held, else 0.
WITH j AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE id = %(job_id)s AND state = 'running' AND lease_token = %(token)s::text
    FOR SHARE
),
step AS (
    INSERT INTO {schema}.job_steps (job_id, at, name, result)
    SELECT j.id, to_timestamp(%(at)s::float8), %(name)s::text, %(result)s::text FROM j
    ON CONFLICT (job_id, name) DO NOTHING
    RETURNING job_id
),
token AS (
    INSERT INTO {schema}.job_tokens (id, job_id, created_at, expires_at, tags)
    SELECT %(token_id)s::text, s.job_id, to_timestamp(%(at)s::float8),
           to_timestamp(%(expires_at)s::float8), %(tags)s::text[]
    FROM step s
    WHERE %(token_id)s::text IS NOT NULL
)
SELECT count(*) FROM j;


-- name: load_steps
SELECT name, result, extract(epoch FROM at)::float8
FROM {schema}.job_steps
WHERE job_id = %(job_id)s
ORDER BY id;


-- name: token_complete
-- complete_token, first statement: complete the token while it is pending and not
-- expired. Returns its job id, or no row (unknown, expired, already completed).
--   %(id)s, %(data)s (JSON text), %(now)s
UPDATE {schema}.job_tokens
SET state = 'completed', data = %(data)s::text, completed_at = to_timestamp(%(now)s::float8)
WHERE id = %(id)s::text
  AND state = 'pending'
  AND (expires_at IS NULL OR expires_at > to_timestamp(%(now)s::float8))
RETURNING job_id;


-- name: token_resume
-- complete_token, second statement (same transaction, a fresh snapshot: see the head):
-- the job waiting on the token is requeued now with a `resumed` event, and a NOTIFY.
-- It finds the job through the token itself (completed: by the first statement, since
-- a job only waits on a pending token), so both statements go out in one pipeline.
--   %(id)s, %(now)s, %(notify_channel)s
-- Returns (name, tenant, attempts) of the job resumed, or no row.
WITH r AS (
    UPDATE {schema}.jobs
    SET state = 'queued', run_at = to_timestamp(%(now)s::float8), wait_token = NULL
    WHERE id = (SELECT k.job_id FROM {schema}.job_tokens k
                WHERE k.id = %(id)s::text AND k.state = 'completed')
      AND state = 'waiting' AND wait_token = %(id)s::text
    RETURNING id, name, tenant, attempts
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT r.id, 'resumed', r.name, r.tenant, r.attempts, to_timestamp(%(now)s::float8),
           '{"reason": "token"}'
    FROM r
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, '') WHERE EXISTS (SELECT 1 FROM r)
)
SELECT r.name, r.tenant, r.attempts FROM r
WHERE (SELECT count(*) FROM notified) >= 0;


-- name: get_token
SELECT id, job_id, state, data, tags, extract(epoch FROM expires_at)::float8,
       extract(epoch FROM created_at)::float8, extract(epoch FROM completed_at)::float8
FROM {schema}.job_tokens
WHERE id = %(id)s::text;


-- name: list_tokens
-- A job's tokens, oldest first.
SELECT id, job_id, state, data, tags, extract(epoch FROM expires_at)::float8,
       extract(epoch FROM created_at)::float8, extract(epoch FROM completed_at)::float8
FROM {schema}.job_tokens
WHERE job_id = %(job_id)s
ORDER BY seq;


-- name: resume_due
-- waiting → queued at %(now)s for up to %(limit)s jobs with run_at <= %(now)s, found
-- through jobs_waiting_idx, each with a `resumed` event ({"reason": "due"} after a
-- sleep, {"reason": "expired", "token": id} after a token wait), wait_token cleared; the
-- token such a job waited on, if still pending, becomes expired. One NOTIFY when any
-- job moved. Every lock is taken with SKIP LOCKED: concurrent callers split the due
-- jobs between them (each resumed once) and never wait; a job whose token another
-- transaction holds (complete_token) is left to it. Rows are found by primary key
-- through arrays of ids (a join would let a generic plan walk the whole table); a
-- token that is gone (it should not be) does not keep its job waiting.
--   %(now)s, %(limit)s, %(notify_channel)s
-- Returns (id, name, tenant, attempts, expired token or NULL), by id.
WITH due AS MATERIALIZED (
    SELECT j.id, j.wait_token
    FROM {schema}.jobs j
    WHERE j.state = 'waiting' AND j.deps_left IS NULL  -- (not waiting on dependencies)
      AND j.run_at <= to_timestamp(%(now)s::float8)
    ORDER BY j.run_at, j.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
tok AS MATERIALIZED (
    SELECT k.id, k.state
    FROM {schema}.job_tokens k
    WHERE k.id = ANY (ARRAY(SELECT d.wait_token FROM due d WHERE d.wait_token IS NOT NULL))
    ORDER BY k.id
    FOR UPDATE SKIP LOCKED
),
go AS MATERIALIZED (
    SELECT d.id, d.wait_token, k.state AS token_state
    FROM due d
    LEFT JOIN tok k ON k.id = d.wait_token
    WHERE d.wait_token IS NULL
       OR k.id IS NOT NULL
       OR (SELECT count(*) FROM {schema}.job_tokens x WHERE x.id = d.wait_token) = 0
),
resumed AS (
    UPDATE {schema}.jobs j
    SET state = 'queued', run_at = to_timestamp(%(now)s::float8), wait_token = NULL
    FROM go
    WHERE j.id = ANY (ARRAY(SELECT g.id FROM go g)) AND j.id = go.id
    RETURNING j.id, j.name, j.tenant, j.attempts, go.wait_token, go.token_state
),
expired AS (
    UPDATE {schema}.job_tokens k
    SET state = 'expired'
    FROM go
    WHERE k.id = ANY (ARRAY(SELECT g.wait_token FROM go g WHERE g.token_state = 'pending'))
      AND k.id = go.wait_token
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT r.id, 'resumed', r.name, r.tenant, r.attempts, to_timestamp(%(now)s::float8),
           CASE WHEN r.wait_token IS NULL THEN '{"reason": "due"}'
                ELSE json_build_object('reason', 'expired', 'token', r.wait_token)::text
           END
    FROM resumed r
    ORDER BY r.id
),
notified AS (
    SELECT pg_notify(%(notify_channel)s, '') WHERE EXISTS (SELECT 1 FROM resumed)
)
SELECT r.id, r.name, r.tenant, r.attempts,
       CASE WHEN r.token_state = 'pending' THEN r.wait_token END
FROM resumed r
WHERE (SELECT count(*) FROM notified) >= 0
ORDER BY r.id;
