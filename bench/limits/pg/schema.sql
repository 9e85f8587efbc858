-- limit-postgres: the leanest durable queue table (as in the engine-limits reference).
-- state: 0 queued, 1 running, 2 completed.
CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state            smallint    NOT NULL DEFAULT 0,
    channel          text        NOT NULL DEFAULT 'default',
    priority         smallint    NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    payload          jsonb       NOT NULL,
    attempts         int         NOT NULL DEFAULT 0,
    lease_token      uuid,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX jobs_ready ON jobs (channel, priority, run_at, id) WHERE state = 0;
