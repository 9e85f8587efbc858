-- ?1 lease token, ?2 lease expiry, ?3 now, ?4 N. Inside BEGIN IMMEDIATE.
UPDATE jobs SET state = 1, attempts = attempts + 1, lease_token = ?1, lease_expires_at = ?2
 WHERE id IN (SELECT id FROM jobs
               WHERE state = 0 AND channel = 'default' AND run_at <= ?3
               ORDER BY priority, run_at, id LIMIT ?4)
RETURNING id, payload
