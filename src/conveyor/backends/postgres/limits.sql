-- conveyor's PostgreSQL queries for flow control (limits.py); the limited claim itself is
-- the claim_limited() function of migrations/0005_limits.sql, as replaced by
-- migrations/0007_rate_spans.sql (rate limits counted per span) and
-- migrations/0008_claim_limited.sql (fewer statements per claim).


-- name: limited_claim
-- A claim with limits or fairness: one call, one round trip. Rows as those of
-- claim_select, in claim order, plus that order (ord).
--   the parameters of claim, and the limits and fairness as parallel arrays:
--   %(l_scope)s, %(l_target)s, %(l_key)s text[], %(l_n)s integer[], %(l_per)s float8[]
--   %(f_channel)s, %(f_by)s text[]
SELECT c.*
FROM {schema}.claim_limited(
         %(now)s::float8, %(lease_expires_at)s::float8, %(token)s::text, %(worker_id)s::text,
         %(limit)s::integer, %(scan)s::integer, %(channels)s::text[], %(include)s::text[],
         %(exclude)s::text[], %(l_scope)s::text[], %(l_target)s::text[], %(l_key)s::text[],
         %(l_n)s::integer[], %(l_per)s::float8[], %(f_channel)s::text[], %(f_by)s::text[],
         '{}'::bigint[]) c,
     (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
ORDER BY c.ord;


-- name: limited_complete_claim_select
-- The claim half of a limited complete_and_claim (after the steps of complete_many, see
-- sqlfiles.Queries): one row per claimed job, or one row of NULL job columns, each with
-- what complete_claim_select gives (applied, woke, changed). The claim runs after the outcomes'
-- rows are locked (it takes `a.leaving`, a lateral reference), so it never holds its
-- advisory locks while it waits for a job row; the jobs those outcomes move out of
-- running (a.leaving) do not count as running (their slots are free for this claim);
-- their groups are freed by the statement after the claim (the caller is woken for
-- them, as for complete_claim).
SELECT a.applied, a.woke, c.id, c.name, c.payload, c.attempts, c.max_attempts, c.channel,
       c.priority, c.tenant, c.group_key, c.tags, c.options, c.run_at, c.created_at,
       c.remove_on_complete, c.stalls, c.max_stalls, a.changed
FROM (SELECT array_agg(t.i) AS applied,
             bool_or(t.group_key IS NOT NULL
                     OR (t.state = 'queued' AND NOT t.remove)) AS woke,
             coalesce(array_agg(t.id), '{}') AS leaving,
             jsonb_object_agg(t.i, t.instead) FILTER (WHERE t.instead IS NOT NULL) AS changed
      FROM tgt t
      WHERE (SELECT count(*) FROM notified) >= 0) a
LEFT JOIN LATERAL (
    SELECT l.*
    FROM {schema}.claim_limited(
             %(now)s::float8, %(lease_expires_at)s::float8, %(token)s::text,
             %(worker_id)s::text, %(limit)s::integer, %(scan)s::integer,
             %(channels)s::text[], %(include)s::text[], %(exclude)s::text[],
             %(l_scope)s::text[], %(l_target)s::text[], %(l_key)s::text[],
             %(l_n)s::integer[], %(l_per)s::float8[], %(f_channel)s::text[],
             %(f_by)s::text[], a.leaving) l
) c ON true
ORDER BY c.ord;


-- name: set_channel_limits
INSERT INTO {schema}.channel_limits AS c (channel, concurrency, rate_n, rate_per, fair_by)
VALUES (%(channel)s, %(concurrency)s, %(rate_n)s, %(rate_per)s, %(fair_by)s)
ON CONFLICT (channel) DO UPDATE
SET concurrency = EXCLUDED.concurrency, rate_n = EXCLUDED.rate_n,
    rate_per = EXCLUDED.rate_per, fair_by = EXCLUDED.fair_by;


-- name: delete_channel_limits
DELETE FROM {schema}.channel_limits WHERE channel = %(channel)s;


-- name: list_channel_limits
-- By channel, in code point order (whatever the database's collation).
SELECT channel, concurrency, rate_n, rate_per, fair_by
FROM {schema}.channel_limits
ORDER BY channel COLLATE "C";
