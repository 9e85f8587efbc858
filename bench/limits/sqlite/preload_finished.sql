-- ?1 now, ?2 how many completed jobs to add (scenario E).
WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < ?2)
INSERT INTO jobs (state, channel, priority, run_at, payload, attempts, created_at, finished_at)
SELECT 2, 'default', 0, ?1 - 3600, json_object('n', -g), 1, ?1 - 3600, ?1 - 3600 + g / 1000.0
  FROM c
