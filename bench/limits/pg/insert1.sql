-- pgbench script: one job per transaction (autocommit).
INSERT INTO jobs (channel, priority, run_at, payload) VALUES ('default', 0, now(), '{"n": 1}');
