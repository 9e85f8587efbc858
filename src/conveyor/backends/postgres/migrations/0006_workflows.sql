-- conveyor PostgreSQL schema, version 6: workflows (DESIGN.md "Workflows: dependencies
-- and batches"; the contract is the "Workflows" block of conveyor.backends.records).
--
-- Storage. job_dependencies holds the edges (dependent job_id, dependency_id), each
-- with its dependent's on_dependency_failure ("run": run_on_failure) and whether the
-- dependency's end was already counted (resolved). A job waiting on dependencies is in
-- state 'waiting' with deps_left = how many it still waits for (NULL otherwise), its
-- run_at kept. batches holds a batch's counters and its callback job (JSON).
-- Markers on jobs keep everything else at its old cost: has_dependents (some job waits
-- on this one), has_dependencies (this one has edges), batch_id (a member, or the
-- batch's callback job) and batch_pending (a member whose end is not counted yet).
--
-- Resolution. Every path that ends a job (complete_many / complete_and_claim outcomes,
-- rescues, cancel, cancel_jobs) is an UPDATE of its state, and every delete is a
-- DELETE: two row triggers on jobs, whose WHEN clauses (evaluated without a function
-- call) pass only rows with a marker, call settle() in the same transaction, after the
-- statement's own changes. A claim or the completion of a job without a marker pays
-- nothing but that WHEN test. settle() counts the batches, resolves the dependents
-- (queued / scheduled, or cancelled) and walks the cancellations down to any depth in a
-- loop (no trigger recursion: the triggers of its own updates return at once).
--
-- Exactly once. An edge is resolved by one UPDATE ... WHERE NOT resolved (a row lock:
-- one transaction wins it); a dependent is changed only while it is 'waiting' with
-- deps_left set, under its row lock (taken in id order), so of two transactions that
-- end two of its dependencies the second sees the first's count. A member is counted
-- while batch_pending (then cleared); a batch becomes 'done' by an UPDATE ... WHERE
-- state = 'running' (its row lock: one transaction does it, and stores the callback).
-- The enqueue locks the stored dependencies it reads (FOR NO KEY UPDATE) until it
-- commits, so a dependency cannot end unseen between the enqueue's read and its edges.
--
-- Times: settle() gets the transition's time (finished_at of the row; for a delete,
-- conveyor.now set by the deleting statement, else the removal outcome's event time).

ALTER TABLE {schema}.jobs
    ADD COLUMN deps_left        integer,
    ADD COLUMN has_dependents   boolean NOT NULL DEFAULT false,
    ADD COLUMN has_dependencies boolean NOT NULL DEFAULT false,
    ADD COLUMN batch_pending    boolean NOT NULL DEFAULT false,
    ADD COLUMN batch_id         text;

CREATE TABLE {schema}.job_dependencies (
    job_id         bigint  NOT NULL,             -- the dependent
    dependency_id  bigint  NOT NULL,
    run_on_failure boolean NOT NULL DEFAULT false,
    resolved       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, dependency_id)
);
CREATE INDEX job_dependencies_open_idx ON {schema}.job_dependencies (dependency_id)
    WHERE NOT resolved;

CREATE TABLE {schema}.batches (
    id              text        PRIMARY KEY,
    total           integer     NOT NULL,
    completed       integer     NOT NULL DEFAULT 0,
    failed          integer     NOT NULL DEFAULT 0,
    cancelled       integer     NOT NULL DEFAULT 0,
    state           text        NOT NULL DEFAULT 'running'
                    CONSTRAINT batches_state_check CHECK (state IN ('running', 'done')),
    created_at      timestamptz NOT NULL,
    callback        text,                        -- JSON object: the job to store when done
    callback_job_id bigint
);

-- resume_due wakes timed waits (sleeps, token expiries) only: a job waiting on its
-- dependencies is woken by them, whatever its run_at.
DROP INDEX {schema}.jobs_waiting_idx;
CREATE INDEX jobs_waiting_idx ON {schema}.jobs (run_at, id)
    WHERE state = 'waiting' AND deps_left IS NULL;


-- batch_count: count members' ends (p_states: completed, failed, cancelled, deleted;
-- anything else counts nothing) into their batches (p_batches, NULL: none); a batch
-- whose counters reach its total becomes 'done' and stores its callback job, once.
CREATE FUNCTION {schema}.batch_count(
    p_batches text[], p_states text[], p_at timestamptz, p_notify text)
RETURNS void LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    b      record;
    cb     jsonb;
    cb_id  bigint;
    due    boolean;
BEGIN
    FOR b IN
        WITH f AS (
            SELECT x.b, x.s FROM unnest(p_batches, p_states) AS x(b, s) WHERE x.b IS NOT NULL
        ),
        agg AS (
            SELECT f.b,
                   count(*) FILTER (WHERE f.s = 'completed') AS c,
                   count(*) FILTER (WHERE f.s = 'failed') AS fl,
                   count(*) FILTER (WHERE f.s IN ('cancelled', 'deleted')) AS cn
            FROM f GROUP BY f.b
        ),
        lk AS MATERIALIZED (
            SELECT bt.id FROM {schema}.batches bt
            WHERE bt.id IN (SELECT agg.b FROM agg) AND bt.state = 'running'
            ORDER BY bt.id
            FOR UPDATE
        )
        UPDATE {schema}.batches bt
        SET completed = bt.completed + agg.c,
            failed = bt.failed + agg.fl,
            cancelled = bt.cancelled + agg.cn,
            state = CASE WHEN bt.completed + agg.c + bt.failed + agg.fl + bt.cancelled + agg.cn
                              >= bt.total THEN 'done' ELSE 'running' END
        FROM agg
        WHERE bt.id = agg.b AND bt.state = 'running' AND bt.id IN (SELECT lk.id FROM lk)
        RETURNING bt.id, bt.total, bt.completed, bt.failed, bt.cancelled, bt.state,
                  bt.callback
    LOOP
        CONTINUE WHEN b.state <> 'done' OR b.callback IS NULL;
        cb := b.callback::jsonb;
        due := coalesce(cb ->> 'state', 'queued') <> 'scheduled'
               OR to_timestamp((cb ->> 'run_at')::float8) <= p_at;
        INSERT INTO {schema}.jobs AS j (
            state, name, payload, run_at, created_at, priority, channel, max_attempts,
            max_stalls, options, remove_on_complete, idempotency_key, tags, group_key, tenant,
            batch_id)
        VALUES (
            CASE WHEN due THEN 'queued' ELSE 'scheduled' END,
            cb ->> 'name', cb ->> 'payload',
            CASE WHEN due THEN p_at ELSE to_timestamp((cb ->> 'run_at')::float8) END,
            p_at, (cb ->> 'priority')::smallint, cb ->> 'channel',
            (cb ->> 'max_attempts')::integer, (cb ->> 'max_stalls')::integer,
            (coalesce(cb ->> 'options', '{}')::jsonb
             || jsonb_build_object('batch', jsonb_build_object(
                    'id', b.id, 'total', b.total, 'completed', b.completed,
                    'failed', b.failed, 'cancelled', b.cancelled)))::text,
            (cb ->> 'remove_on_complete')::boolean, cb ->> 'idempotency_key',
            ARRAY(SELECT jsonb_array_elements_text(cb -> 'tags')),
            cb ->> 'group_key', cb ->> 'tenant', b.id)
        ON CONFLICT ((coalesce(tenant, '')), idempotency_key) WHERE idempotency_key IS NOT NULL
        DO NOTHING
        RETURNING j.id INTO cb_id;
        IF cb_id IS NULL THEN  -- its idempotency key names a stored job: that one stands
            SELECT j.id INTO cb_id FROM {schema}.jobs j
            WHERE coalesce(j.tenant, '') = coalesce(cb ->> 'tenant', '')
              AND j.idempotency_key = cb ->> 'idempotency_key';
        ELSE
            -- its `enqueued` event is its row, unless the row may vanish first (enqueue)
            INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
            SELECT cb_id, 'enqueued', cb ->> 'name', cb ->> 'tenant', 0, p_at, NULL
            WHERE (cb ->> 'remove_on_complete')::boolean OR (cb ->> 'remove_on_fail')::boolean;
            IF due THEN
                PERFORM pg_notify(p_notify, '');
            END IF;
        END IF;
        UPDATE {schema}.batches SET callback_job_id = cb_id WHERE id = b.id;
    END LOOP;
END
$fn$;


-- settle: the jobs p_ids ended (p_states[i]: completed, failed, cancelled, deleted) at
-- p_at; p_batches[i] is the batch whose member p_ids[i] is still to be counted (NULL:
-- none). Counts the batches, then resolves the waiting dependents; the ones it cancels
-- are settled the same way in the next round, until none is left.
CREATE FUNCTION {schema}.settle(
    p_ids bigint[], p_states text[], p_batches text[], p_at timestamptz, p_notify text)
RETURNS void LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    ids      bigint[] := p_ids;
    states   text[] := p_states;
    batches  text[] := p_batches;
    outer_on text := coalesce(current_setting('conveyor.settling', true), '');
    dep_ids  bigint[];
    dep_ok   bigint[];
    dep_bad  bigint[];
    queued   integer;
BEGIN
    PERFORM set_config('conveyor.settling', 'on', true);
    WHILE coalesce(cardinality(ids), 0) > 0 LOOP
        IF EXISTS (SELECT 1 FROM unnest(batches) AS x(b) WHERE x.b IS NOT NULL) THEN
            UPDATE {schema}.jobs SET batch_pending = false
            WHERE id = ANY (ids) AND batch_pending;
            PERFORM {schema}.batch_count(batches, states, p_at, p_notify);
        END IF;

        -- the open edges on these jobs, resolved once, per dependent: how many ended
        -- in a way that satisfies it, and the first that failed it
        WITH f AS (
            SELECT x.id, x.s FROM unnest(ids, states) AS x(id, s)
        ),
        r AS (
            UPDATE {schema}.job_dependencies d SET resolved = true
            FROM f
            WHERE d.dependency_id = f.id AND NOT d.resolved
            RETURNING d.job_id, d.dependency_id, (f.s = 'completed' OR d.run_on_failure) AS ok
        )
        SELECT array_agg(g.job_id ORDER BY g.job_id), array_agg(g.n_ok ORDER BY g.job_id),
               array_agg(g.bad ORDER BY g.job_id)
        INTO dep_ids, dep_ok, dep_bad
        FROM (SELECT r.job_id, count(*) FILTER (WHERE r.ok) AS n_ok,
                     min(r.dependency_id) FILTER (WHERE NOT r.ok) AS bad
              FROM r GROUP BY r.job_id) g;
        EXIT WHEN dep_ids IS NULL;

        -- lock the dependents in id order (concurrent settles never wait in a cycle);
        -- the statements below read a snapshot taken after these locks
        PERFORM 1 FROM {schema}.jobs j WHERE j.id = ANY (dep_ids) ORDER BY j.id FOR UPDATE;

        WITH c AS (
            UPDATE {schema}.jobs j
            SET state = 'cancelled', finished_at = p_at, deps_left = NULL
            FROM unnest(dep_ids, dep_bad) AS x(id, bad)
            WHERE j.id = x.id AND x.bad IS NOT NULL
              AND j.state = 'waiting' AND j.deps_left IS NOT NULL
            RETURNING j.id, j.name, j.tenant, j.attempts, x.bad,
                      CASE WHEN j.batch_pending THEN j.batch_id END AS batch_id
        ),
        ev AS (
            INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
            SELECT c.id, 'cancelled', c.name, c.tenant, c.attempts, p_at,
                   json_build_object('reason', 'dependency_failed', 'dependency', c.bad)::text
            FROM c ORDER BY c.id
        )
        SELECT coalesce(array_agg(c.id ORDER BY c.id), '{}'),
               coalesce(array_agg(c.batch_id ORDER BY c.id), '{}')
        INTO ids, batches
        FROM c;
        states := array_fill('cancelled'::text, ARRAY[cardinality(ids)]);

        WITH u AS (
            UPDATE {schema}.jobs j
            SET deps_left = CASE WHEN j.deps_left - x.ok > 0 THEN j.deps_left - x.ok END,
                state = CASE WHEN j.deps_left - x.ok > 0 THEN 'waiting'
                             WHEN j.run_at > p_at THEN 'scheduled'
                             ELSE 'queued' END
            FROM unnest(dep_ids, dep_ok, dep_bad) AS x(id, ok, bad)
            WHERE j.id = x.id AND x.bad IS NULL AND x.ok > 0
              AND j.state = 'waiting' AND j.deps_left IS NOT NULL
            RETURNING j.id, j.name, j.tenant, j.attempts, j.state
        ),
        ev AS (
            INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
            SELECT u.id, 'resumed', u.name, u.tenant, u.attempts, p_at,
                   '{"reason": "dependencies"}'
            FROM u WHERE u.state <> 'waiting' ORDER BY u.id
        )
        SELECT count(*) FILTER (WHERE u.state = 'queued') INTO queued FROM u;
        IF queued > 0 THEN
            PERFORM pg_notify(p_notify, '');
        END IF;
    END LOOP;
    PERFORM set_config('conveyor.settling', outer_on, true);
END
$fn$;


-- The triggers. A cascade step of settle() (conveyor.settling on) is settled by that
-- settle() itself.
CREATE FUNCTION {schema}.jobs_ended() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    IF coalesce(current_setting('conveyor.settling', true), '') = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM {schema}.settle(
        ARRAY[NEW.id], ARRAY[NEW.state],
        ARRAY[CASE WHEN NEW.batch_pending THEN NEW.batch_id END],
        coalesce(NEW.finished_at, to_timestamp(
            nullif(current_setting('conveyor.now', true), '')::float8), statement_timestamp()),
        'conveyor_' || TG_TABLE_SCHEMA);
    RETURN NULL;
END
$fn$;

-- A deleted job takes its own edges and, as a batch's callback job, its batch row. An
-- unfinished one ends for its dependents and its batch as 'deleted' (as cancelled),
-- unless it was running: then an outcome removed it (remove_on_complete /
-- remove_on_fail), and that outcome's event, stored by the same statement, says how it
-- ended.
CREATE FUNCTION {schema}.jobs_deleted() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    ended text := 'deleted';
    at    timestamptz := to_timestamp(nullif(current_setting('conveyor.now', true), '')::float8);
    ev    record;
BEGIN
    IF OLD.has_dependencies THEN
        DELETE FROM {schema}.job_dependencies WHERE job_id = OLD.id;
    END IF;
    IF OLD.batch_id IS NOT NULL AND NOT OLD.batch_pending THEN
        DELETE FROM {schema}.batches WHERE id = OLD.batch_id AND callback_job_id = OLD.id;
    END IF;
    IF OLD.state IN ('completed', 'failed', 'cancelled')
       OR NOT (OLD.has_dependents OR OLD.batch_pending) THEN
        RETURN NULL;
    END IF;
    IF OLD.state = 'running' THEN
        SELECT e.type, e.at INTO ev FROM {schema}.job_events e
        WHERE e.job_id = OLD.id ORDER BY e.id DESC LIMIT 1;
        ended := CASE WHEN ev.type = 'completed' THEN 'completed' ELSE 'failed' END;
        at := coalesce(ev.at, at);
    END IF;
    PERFORM {schema}.settle(
        ARRAY[OLD.id], ARRAY[ended],
        ARRAY[CASE WHEN OLD.batch_pending THEN OLD.batch_id END],
        coalesce(at, statement_timestamp()), 'conveyor_' || TG_TABLE_SCHEMA);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER jobs_ended AFTER UPDATE OF state ON {schema}.jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('completed', 'failed', 'cancelled') AND OLD.state <> NEW.state
          AND (NEW.has_dependents OR NEW.batch_pending))
    EXECUTE FUNCTION {schema}.jobs_ended();

CREATE TRIGGER jobs_deleted AFTER DELETE ON {schema}.jobs
    FOR EACH ROW
    WHEN (OLD.has_dependents OR OLD.has_dependencies OR OLD.batch_id IS NOT NULL)
    EXECUTE FUNCTION {schema}.jobs_deleted();
