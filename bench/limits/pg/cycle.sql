-- pgbench script (run with -D n=N): claim N due jobs, then complete them, as two
-- autocommit statements (the faster variant at N = 10 in the engine-limits reference).
WITH c AS MATERIALIZED (
    SELECT id FROM jobs
     WHERE state = 0 AND channel = 'default' AND run_at <= now()
     ORDER BY priority, run_at, id
     LIMIT :n FOR UPDATE SKIP LOCKED
), t AS (SELECT gen_random_uuid() AS tok),
u AS (
    UPDATE jobs j SET state = 1, attempts = j.attempts + 1, lease_token = t.tok,
                      lease_expires_at = now() + interval '5 minutes'
      FROM c, t WHERE j.id = c.id
    RETURNING j.id, j.payload, j.lease_token
)
SELECT array_agg(id) AS ids, array_agg(payload) AS payloads, min(lease_token::text) AS tok
  FROM u \gset
UPDATE jobs SET state = 2, finished_at = now(), lease_token = NULL
 WHERE id = ANY (:ids::bigint[]) AND lease_token = :tok::uuid;
