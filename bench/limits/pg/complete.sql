-- Parameters: the job ids, the lease token.
UPDATE jobs SET state = 2, finished_at = now(), lease_token = NULL
 WHERE id = ANY (%s) AND lease_token = %s
