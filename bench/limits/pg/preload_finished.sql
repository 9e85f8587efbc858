-- Parameter: how many completed jobs to add (scenario E).
INSERT INTO jobs (state, channel, priority, run_at, payload, attempts, created_at, finished_at)
SELECT 2, 'default', 0, now() - interval '1 hour', jsonb_build_object('n', -g), 1,
       now() - interval '1 hour', now() - interval '1 hour' + g * interval '1 millisecond'
  FROM generate_series(1, %s) AS g
