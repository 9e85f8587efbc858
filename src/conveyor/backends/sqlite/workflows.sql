-- Named queries of workflows on SQLite (workflows.py): dependencies, batches and
-- uniqueness windows. The tables are in schema.sql, the jobs' columns in columns.sql.
-- Result columns are read by index: the caller's own connection (connection=) may lack
-- the backend's row factory.

-- name: insert_job
-- A job of a workflow enqueue: with its batch, its dependency count (deps_left, while it
-- waits on them) and on_dependency_failure (set only on jobs with dependencies, which
-- also marks their edges for the delete trigger).
INSERT INTO conveyor_jobs (name, channel, payload, state, priority, run_at, created_at,
    finished_at, max_attempts, max_stalls, tags, group_key, tenant, idempotency_key,
    options, remove_on_complete, batch_id, deps_left, on_dependency_failure)
VALUES (:name, :channel, :payload, :state, :priority, :run_at, :now,
    :finished_at, :max_attempts, :max_stalls, :tags, :group_key, :tenant, :idempotency_key,
    :options, :remove_on_complete, :batch_id, :deps_left, :on_dependency_failure)
ON CONFLICT DO NOTHING
RETURNING id

-- name: job_states
-- The stored jobs among the ids (a JSON array) and their states.
SELECT id, state FROM conveyor_jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- name: find_unique
SELECT id, state, created_at FROM conveyor_jobs
WHERE coalesce(tenant, '') = coalesce(:tenant, '') AND idempotency_key = :idempotency_key

-- name: release_key
-- A uniqueness window has passed: the job gives up its key, and nothing else.
UPDATE conveyor_jobs SET idempotency_key = NULL WHERE id = :id

-- name: insert_edges
INSERT INTO conveyor_dependencies (job_id, depends_on, resolved)
SELECT :job_id, value ->> '$[0]', value ->> '$[1]' FROM json_each(:edges) WHERE true
ON CONFLICT DO NOTHING

-- name: mark_dependents
-- The marker that makes a job's final transition look for its dependents.
UPDATE conveyor_jobs SET dependents = 1
WHERE id IN (SELECT value FROM json_each(:ids)) AND dependents = 0

-- name: resolve_dependents
-- One dependency (:id) has finished: every job still waiting on it counts it (:ok: it
-- completed, or the job runs anyway) or is cancelled. At its last dependency a job is
-- queued (scheduled when its run_at is still ahead). Only jobs whose edge is still
-- unresolved: each edge is resolved once (resolve_edges, right after).
UPDATE conveyor_jobs
SET state = CASE WHEN NOT (:ok OR on_dependency_failure = 'run') THEN 'cancelled'
                 WHEN deps_left > 1 THEN 'waiting'
                 WHEN run_at > :now THEN 'scheduled'
                 ELSE 'queued' END,
    deps_left = CASE WHEN (:ok OR on_dependency_failure = 'run') AND deps_left > 1
                     THEN deps_left - 1 END,
    finished_at = CASE WHEN NOT (:ok OR on_dependency_failure = 'run') THEN :now
                       ELSE finished_at END
WHERE id IN (SELECT job_id FROM conveyor_dependencies INDEXED BY conveyor_dependencies_open
             WHERE depends_on = :id AND resolved = 0)
  AND state = 'waiting' AND deps_left IS NOT NULL
RETURNING id, state, name, tenant, attempts, dependents, batch_id

-- name: resolve_edges
UPDATE conveyor_dependencies SET resolved = 1 WHERE depends_on = :id AND resolved = 0

-- name: count_member
-- A member of batch :batch_id reached its final state (:kind; a deleted one counts as
-- cancelled). The update that brings the count to the total marks the batch done.
UPDATE conveyor_batches
SET completed = completed + (:kind = 'completed'),
    failed = failed + (:kind = 'failed'),
    cancelled = cancelled + (:kind IN ('cancelled', 'deleted')),
    state = CASE WHEN completed + failed + cancelled + 1 >= total THEN 'done' ELSE state END
WHERE id = :batch_id AND state = 'running'
RETURNING state, total, completed, failed, cancelled, callback

-- name: member_counted
-- A member is counted once: a retried member that finishes again is not a member any more.
UPDATE conveyor_jobs SET batch_id = NULL WHERE id = :id

-- name: insert_batch
INSERT INTO conveyor_batches (id, total, state, created_at, callback)
VALUES (:id, :total, 'running', :now, :callback)

-- name: close_batch
-- An empty batch (total 0) is done as soon as it is stored.
UPDATE conveyor_batches SET state = 'done' WHERE id = :id AND state = 'running'
RETURNING state, total, completed, failed, cancelled, callback

-- name: set_callback
UPDATE conveyor_batches SET callback_job_id = :job_id WHERE id = :id

-- name: get_batch
SELECT id, total, completed, failed, cancelled, state, created_at, callback_job_id
FROM conveyor_batches WHERE id = :id

-- name: dependency_results
SELECT d.depends_on, j.result FROM conveyor_dependencies AS d
LEFT JOIN conveyor_jobs AS j ON j.id = d.depends_on
WHERE d.job_id = :job_id
ORDER BY d.rowid
