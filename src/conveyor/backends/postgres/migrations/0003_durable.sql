-- conveyor PostgreSQL schema, version 3: durable multi-step jobs (DESIGN.md "Durable
-- multi-step jobs (`ctx`)"): steps, waits and tokens.
--
-- A job suspended by ctx.sleep / ctx.wait_for_token is in state 'waiting' with run_at
-- the time to wake (a token's expiry, or 9999-12-31 for none) and wait_token the token
-- it waits on. Waiting jobs are in no claim index (those hold queued rows only), and
-- resume_due finds the due ones through jobs_waiting_idx, which holds waiting rows
-- only: 100,000 waiting jobs cost the claim nothing. jobs_due_idx (scheduled and
-- waiting rows) gives way to one index per state, so promote_due never walks
-- waiting rows either. Adding a nullable column rewrites no rows.

ALTER TABLE {schema}.jobs ADD COLUMN wait_token text;

DROP INDEX IF EXISTS {schema}.jobs_due_idx;
CREATE INDEX jobs_scheduled_idx ON {schema}.jobs (run_at)
    WHERE state = 'scheduled';
CREATE INDEX jobs_waiting_idx ON {schema}.jobs (run_at, id)
    WHERE state = 'waiting';

-- Completed steps of a job: the first result stored under a name stands (unique per
-- job); id keeps the order they were stored in. Deleted with their job (an outcome
-- with remove, prune).
CREATE TABLE {schema}.job_steps (
    id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint      NOT NULL,
    at     timestamptz NOT NULL,
    name   text        NOT NULL,
    result text        NOT NULL,                 -- JSON text
    CONSTRAINT job_steps_job_name_key UNIQUE (job_id, name)
);

-- Tokens (ctx.create_token), stored with their step. complete_token and a suspend on a
-- token both lock the token's row before they touch its job, so whichever comes
-- second sees what the other committed.
CREATE TABLE {schema}.job_tokens (
    id           text        PRIMARY KEY,
    job_id       bigint      NOT NULL,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,  -- oldest first, ties included
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,                    -- NULL: never expires
    completed_at timestamptz,
    state        text        NOT NULL DEFAULT 'pending'
                 CONSTRAINT job_tokens_state_check
                 CHECK (state IN ('pending', 'completed', 'expired')),
    data         text,                           -- JSON text given to complete_token
    tags         text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX job_tokens_job_idx ON {schema}.job_tokens (job_id, seq);
