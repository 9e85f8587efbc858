-- Parameter: a text[] of JSON payloads; one statement per chunk (autocommit).
INSERT INTO jobs (channel, priority, run_at, payload)
SELECT 'default', 0, now(), p::jsonb FROM unnest(%s::text[]) AS p
