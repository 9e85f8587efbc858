-- conveyor's PostgreSQL queries for workflows (workflows.py): the steps of an enqueue
-- with dependencies, a batch or a uniqueness window, and the two read verbs. Same rules
-- as queries.sql. What ends a job resolves its dependents and counts its batch through
-- the triggers of migration 0006 (settle()), not through these.


-- name: workflow_lock
-- The dependencies an enqueue names, locked until it commits (a dependency cannot end
-- unseen between this read and the dependents' edges: its transition waits for the
-- lock, then its trigger sees the edges), with their states. Unknown ids are missing.
--   %(ids)s bigint[]
SELECT id, state FROM {schema}.jobs
WHERE id = ANY (%(ids)s::bigint[])
ORDER BY id
FOR NO KEY UPDATE;


-- name: workflow_release_keys
-- Uniqueness windows: the stored job holding each key gives it up (idempotency_key
-- NULL, nothing else changes) when it was created at or before `before` (now -
-- unique_for) or its state is not in `states`. A concurrent enqueue of the same key
-- waits on the row lock, then finds the key gone and conflicts with our new job.
--   %(keys)s JSON array of {tenant ('' for none), key, before (epoch or null),
--            states (array or null)}
UPDATE {schema}.jobs j
SET idempotency_key = NULL
FROM json_to_recordset(%(keys)s::json) AS k(tenant text, key text, before float8, states json)
WHERE coalesce(j.tenant, '') = k.tenant
  AND j.idempotency_key = k.key
  AND ((k.before IS NOT NULL AND j.created_at <= to_timestamp(k.before))
       OR (k.states IS NOT NULL
           AND j.state <> ALL (ARRAY(SELECT json_array_elements_text(k.states)))))
RETURNING j.id;


-- name: workflow_batch
-- Store a batch (before its members' workflow_apply, whose triggers count into it).
--   %(id)s, %(total)s, %(now)s, %(callback)s (JSON object or NULL)
INSERT INTO {schema}.batches (id, total, created_at, callback)
VALUES (%(id)s::text, %(total)s::integer, to_timestamp(%(now)s::float8), %(callback)s::text)
RETURNING id;


-- name: workflow_batch_empty
-- A batch none of whose members was stored anew (every one matched an idempotency
-- key): done at once, its callback stored.
--   %(id)s, %(now)s, %(notify_channel)s
SELECT {schema}.batch_count(ARRAY[%(id)s::text], ARRAY['none'],
                            to_timestamp(%(now)s::float8), %(notify_channel)s::text);


-- name: workflow_apply
-- The new jobs' workflow fields, after their insert, in one statement: edges, the
-- has_dependents marker of the stored dependencies (the new ones get it in `u`), the
-- state the dependencies decide (waiting with deps_left, or cancelled with its event),
-- batch membership. A member cancelled here is counted by the trigger (settle()), at
-- the end of this statement.
--   %(jobs)s JSON array of {id, state (NULL: as inserted), deps_left, bad (the failed
--            dependency of a job cancelled here), dependent, dependencies, batch_id}
--   %(edges)s JSON array of {job_id, dependency_id, run, resolved}
--   %(marked)s bigint[] (stored jobs that now have dependents; none of them in jobs)
--   %(now)s
WITH x AS (
    SELECT * FROM json_to_recordset(%(jobs)s::json) AS x(
        id bigint, state text, deps_left integer, bad bigint, dependent boolean,
        dependencies boolean, batch_id text)
),
edges AS (
    INSERT INTO {schema}.job_dependencies (job_id, dependency_id, run_on_failure, resolved)
    SELECT e.job_id, e.dependency_id, e.run, e.resolved
    FROM json_to_recordset(%(edges)s::json) AS e(
        job_id bigint, dependency_id bigint, run boolean, resolved boolean)
    ON CONFLICT DO NOTHING
),
marked AS (
    UPDATE {schema}.jobs j SET has_dependents = true
    WHERE j.id = ANY (%(marked)s::bigint[]) AND NOT j.has_dependents
),
u AS (
    UPDATE {schema}.jobs j
    SET state = coalesce(x.state, j.state),
        deps_left = x.deps_left,
        finished_at = CASE WHEN x.state = 'cancelled' THEN to_timestamp(%(now)s::float8)
                           ELSE j.finished_at END,
        has_dependents = j.has_dependents OR x.dependent,
        has_dependencies = x.dependencies,
        batch_id = x.batch_id,
        batch_pending = x.batch_id IS NOT NULL
    FROM x
    WHERE j.id = x.id
    RETURNING j.id, j.name, j.tenant, j.attempts, x.bad
),
events AS (
    INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
    SELECT u.id, 'cancelled', u.name, u.tenant, u.attempts, to_timestamp(%(now)s::float8),
           json_build_object('reason', 'dependency_failed', 'dependency', u.bad)::text
    FROM u WHERE u.bad IS NOT NULL
    ORDER BY u.id
)
SELECT count(*) FROM u;


-- name: dependency_results
-- The jobs %(id)s depends on, with their results (NULL: none, or the job is gone).
SELECT d.dependency_id, j.result
FROM {schema}.job_dependencies d
LEFT JOIN {schema}.jobs j ON j.id = d.dependency_id
WHERE d.job_id = %(id)s::bigint
ORDER BY d.dependency_id;


-- name: get_batch
SELECT id, total, completed, failed, cancelled, state,
       extract(epoch FROM created_at)::float8, callback_job_id
FROM {schema}.batches
WHERE id = %(id)s::text;
