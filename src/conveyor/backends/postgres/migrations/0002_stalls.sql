-- conveyor PostgreSQL schema, version 2: stalls (DESIGN.md "A dead worker is not the
-- job's fault"). A job whose worker died (its lease expired and maintenance rescued
-- it) goes back to the queue without using up an attempt, up to max_stalls times.
--
-- stalls counts those runs (attempts still counts every run started); max_stalls is
-- the job's bound, set at enqueue. Existing jobs get the defaults: no stall so far,
-- one allowed. Adding a column with a constant default rewrites no rows.

ALTER TABLE {schema}.jobs
    ADD COLUMN stalls     integer NOT NULL DEFAULT 0,
    ADD COLUMN max_stalls integer NOT NULL DEFAULT 1;
