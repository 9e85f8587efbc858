-- ?1 finished_at, ?2 JSON array of job ids, ?3 lease token. Inside BEGIN IMMEDIATE.
UPDATE jobs SET state = 2, finished_at = ?1, lease_token = NULL
 WHERE id IN (SELECT value FROM json_each(?2)) AND lease_token = ?3
