-- Parameter: the batch size N. Claims up to N due jobs (the psycopg twin of cycle.sql).
WITH c AS MATERIALIZED (
    SELECT id FROM jobs
     WHERE state = 0 AND channel = 'default' AND run_at <= now()
     ORDER BY priority, run_at, id
     LIMIT %s FOR UPDATE SKIP LOCKED
), t AS (SELECT gen_random_uuid() AS tok)
UPDATE jobs j SET state = 1, attempts = j.attempts + 1, lease_token = t.tok,
                  lease_expires_at = now() + interval '5 minutes'
  FROM c, t WHERE j.id = c.id
RETURNING j.id, j.payload, j.lease_token
