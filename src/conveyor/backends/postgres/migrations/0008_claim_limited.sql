-- conveyor PostgreSQL schema, version 8: a cheaper limited claim (the contract is
-- ClaimLimit in conveyor.backends.records). Measured on a drain of 20,000 jobs under a
-- per-tenant limit, each change below took a share of what limits added to a claim:
--
-- * Row locks in one statement. Until version 7, claim_limited() took each admitted
--   job's row lock with a statement of its own (PERFORM ... FOR UPDATE SKIP LOCKED) in
--   the admission loop: 20 more statements for a batch of 20. Now the admission loop
--   only decides; each pass then locks what it admitted in one statement, a lateral
--   primary-key probe per id (so the plan cannot become a scan of the queue however
--   stale the statistics are), SKIP LOCKED. A job that lost its lock (another claimer
--   holds the row, or it left the queue since it was read) was counted against its
--   limits and group by the pass: it gives them back, is not read again by this claim,
--   and counts as held back, so the next pass (at most 3, as before) may fill its place.
-- * The claim order first. While no key is full and no claimed channel is fair, the
--   first pass reads the due jobs in claim order, one ordered scan of the claim index as
--   the plain claim does, through a cursor that the admission reads only as far as the
--   batch needs, instead of enumerating the (channel, name) streams, reading each, and
--   reading the candidates again by id; the streams are read (as before) from the next
--   pass on, when limits held jobs back.
-- * A stream is read from its head on. The enumeration of the streams returns each
--   stream's first queued job, and the stream's read starts there: the index entries
--   before it (jobs that left the queue, until a vacuum removes them) are walked once
--   per claim, not twice.
-- * Fewer statements: the expired rate spans are deleted by the claims in the first of
--   every 10 spans of a limit (up to 2,000 per limit each) instead of by every claim,
--   whose scan walked the index entries of the spans deleted before it; no delete at
--   all without a rate limit; running_groups is written only when a taken job's group
--   rule applies.
--
-- The signature, the counts and the claim order do not change, so a worker of the
-- previous release that is still running during the upgrade calls this version.

-- claim_limited, replaced (version 8). The claim of ClaimParams with limits (l_*: one
-- array element per ClaimLimit) and fairness (f_*: (channel, 'tenant' | 'group')
-- pairs). p_leaving: the jobs that the same statement moves out of running
-- (complete_and_claim's outcomes, applied after this call): their slots count as free.
--
-- 1. Every claimer of a limited scope (scope, target) takes a transaction-level advisory
--    lock on it, in a fixed order, before it counts: limited claims of one scope run
--    one at a time, and each statement of this (volatile) function reads a snapshot
--    taken after the lock, so it sees every start committed before (no overshoot).
-- 2. Counts: the spans whose end is at or before now minus the longest window of their
--    limit are deleted (an ordered range scan per limit that meets only those). Then
--    running jobs (state 'running': as few as the workers' slots, so a dead
--    worker's slot is free as soon as its job is rescued) and the starts of the spans
--    whose latest start is after now - per, per limit and key value, into `used`
--    ("i/v<value>", "i/n" for none). A span counts in full, also one later than this
--    claim's now (another worker's clock reading, or a claim that read its now before
--    it waited for the lock).
-- 3. Candidates: on the first pass, while no key is full and no claimed channel is
--    fair, the first p_scan due jobs in claim order (the plain claim's ordered scan of
--    jobs_claim_channel_idx / jobs_claim_idx): if limits hold some of them back, the
--    next pass reads per stream as follows. Otherwise, the (channel, name) pairs with
--    queued jobs (loose index scan on jobs_claim_stream_idx), each with its head. A pair with a full unkeyed limit is skipped whole. A pair
--    of a fair channel, or under a keyed limit with full values, is read per key value
--    (loose scan on jobs_claim_tenant_idx / jobs_claim_group_idx), full values skipped;
--    any other pair is read from its head on. Each stream gives up to p_scan jobs (fair
--    streams fewer: enough for the rounds this claim can take).
-- 4. Admission in claim order (round, priority, run_at, id) (round: the job's rank in
--    its channel's key value when the channel is fair, else 1): a job is taken when
--    every limit it falls under has room (counting the jobs taken so far), its group
--    runs no job (unless a name-scoped group-keyed limit replaces that rule for its
--    name); then the row locks of the jobs a pass admitted are taken in one statement
--    (SKIP LOCKED, one primary-key probe per job): a job whose row another claimer
--    holds, or that left the queue since it was read, is not taken and gives its
--    counts and group back. If the batch is short and something was held back (or
--    lost its lock), steps 3-4 run again (at most 3 passes) with the new counts.
-- 5. Groups are taken in group_key order (as the plain claim), then the rows flip to
--    running, their `started` events are stored and their starts are added to the
--    current span of each rate limit they fall under (one upsert per limit and key
--    value; limits of one identity with different windows share the shortest span);
--    the rows come back in claim order (ord).
CREATE OR REPLACE FUNCTION {schema}.claim_limited(
    p_now double precision, p_lease double precision, p_token text, p_worker text,
    p_limit integer, p_scan integer, p_channels text[], p_include text[], p_exclude text[],
    l_scope text[], l_target text[], l_key text[], l_n integer[], l_per double precision[],
    f_channel text[], f_by text[], p_leaving bigint[])
RETURNS TABLE (
    id bigint, name text, payload text, attempts integer, max_attempts integer,
    channel text, priority smallint, tenant text, group_key text, tags text[],
    options text, run_at double precision, created_at double precision,
    remove_on_complete boolean, stalls integer, max_stalls integer, ord integer)
LANGUAGE plpgsql VOLATILE AS $fn$
#variable_conflict use_column
DECLARE
    now_ts       timestamptz := to_timestamp(p_now);
    nl           integer := coalesce(array_length(l_scope, 1), 0);
    used         jsonb := '{}';
    fullkeys     text[];
    taken        bigint[] := '{}';
    cands        bigint[];           -- admitted by this pass, their row locks not yet taken
    got          bigint[];
    passed       bigint[] := '{}';   -- not to read again: taken, locked elsewhere, group busy
    taken_groups text[] := '{}';
    group_free   text[];
    lost         bigint[];
    pool         bigint[];
    vals         text[];
    fullvals     text[];
    nullfull     boolean;
    has_null     boolean;
    per_value    integer;
    split        text;
    fair         text;
    lk           text;
    pc           record;
    r            record;
    i            integer;
    ok           boolean;
    held         integer;
    pass         integer := 0;
    rated        boolean := cardinality(array_remove(l_per, NULL)) > 0;  -- any rate limit
    sort_was     text;
    cur          refcursor;        -- the pass's candidates, in claim order
BEGIN
    IF EXISTS (SELECT 1 FROM {schema}.paused_channels p WHERE p.channel = '') THEN
        RETURN;
    END IF;
    FOR lk IN SELECT DISTINCT l_scope[k] || ':' || l_target[k]
              FROM generate_subscripts(l_scope, 1) AS k ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(hashtext('conveyor.limits.{schema}'), hashtext(lk));
    END LOOP;

    -- spans that ended at or before now minus the longest window of their limit (and a
    -- second of slack: a claimer whose clock is behind this one's still counts them)
    -- are counted by no window: found per limit by an ordered range scan of the index
    -- (ORDER BY and LIMIT make that the plan whatever the statistics say, where a join
    -- of the log with the limits would read every span of the log). Only the claims in
    -- the first of every 10 spans of a limit do it, up to 2,000 spans per limit each:
    -- each such scan walks the index entries of the spans deleted before it until a
    -- vacuum removes them, which would cost every claim, and a span that no window
    -- counts may as well stay a little longer (the count's range scan starts at the
    -- window, past them). A claim adds at most one span per job it takes, so the claims
    -- of one span in ten delete 2,000 for every 20 the claims of ten spans can add:
    -- after a long pause, the next such claims delete the rest.
    IF rated THEN
        DELETE FROM {schema}.limit_starts s
        WHERE s.ctid = ANY (ARRAY(
            SELECT e.ctid
            FROM (SELECT l_scope[k] || ':' || coalesce(l_key[k], '') || ':' || l_target[k] AS lim,
                         max(l_per[k]) AS per
                  FROM generate_subscripts(l_scope, 1) AS k
                  WHERE l_per[k] IS NOT NULL
                  GROUP BY 1
                  HAVING bool_or(floor(p_now / least(l_per[k] / 50, 1))::bigint % 10 = 0)) x
            CROSS JOIN LATERAL (
                SELECT t.ctid FROM {schema}.limit_starts t
                WHERE t.lim = x.lim AND t.at <= now_ts - make_interval(secs => x.per + 1)
                ORDER BY t.at
                LIMIT 2000) e));
    END IF;

    SELECT coalesce(jsonb_object_agg(u.k, u.c), '{}') INTO used FROM (
        SELECT l.k || '/' || coalesce('v' || CASE l.key WHEN 'tenant' THEN j.tenant
                                                        WHEN 'group' THEN j.group_key END,
                                      'n') AS k,
               count(*) AS c
        FROM unnest(l_scope, l_target, l_key, l_per) WITH ORDINALITY AS l(scope, target, key, per, k)
        JOIN (SELECT j.name, j.channel, j.tenant, j.group_key
              FROM {schema}.jobs j
              WHERE j.state = 'running' AND j.id <> ALL (p_leaving)) j
          ON (CASE l.scope WHEN 'name' THEN j.name ELSE j.channel END) = l.target
        WHERE l.per IS NULL
        GROUP BY 1
        UNION ALL
        SELECT l.k || '/' || coalesce('v' || s.keyval, 'n'), s.c
        FROM unnest(l_scope, l_target, l_key, l_per) WITH ORDINALITY AS l(scope, target, key, per, k)
        -- per limit, a range scan of its own spans (at: the index range, which holds
        -- every span whose latest start counts); a start later than now counts too: a
        -- claimer whose now was read before it waited for the lock counts it
        CROSS JOIN LATERAL (
            SELECT t.keyval, sum(t.n) AS c
            FROM {schema}.limit_starts t
            WHERE t.lim = l.scope || ':' || coalesce(l.key, '') || ':' || l.target
              AND t.at > now_ts - make_interval(secs => l.per)
              AND t.latest > now_ts - make_interval(secs => l.per)
            GROUP BY t.keyval) s
        WHERE l.per IS NOT NULL
    ) u;

    group_free := ARRAY(SELECT DISTINCT l_target[k] FROM generate_subscripts(l_scope, 1) AS k
                        WHERE l_scope[k] = 'name' AND l_key[k] = 'group' AND l_per[k] IS NULL);

    LOOP
        pass := pass + 1;
        fullkeys := ARRAY(SELECT e.key FROM jsonb_each_text(used) e
                          WHERE e.value::integer >= l_n[split_part(e.key, '/', 1)::integer]);
        held := 0;
        cands := '{}';
        IF pass = 1 AND cardinality(fullkeys) = 0 AND cardinality(f_channel) = 0 THEN
            -- no key full yet and no fair channel: the first pass reads the claim order
            -- itself, as the plain claim does: one ordered scan of the claim index, past
            -- the jobs of running groups (unless a limit replaces their name's group rule),
            -- read through a cursor as far as the admission needs (at most p_scan jobs).
            -- Planned with sorts disabled (for this cursor only): with statistics that lag
            -- behind a burst of jobs, the planner guesses fewer due jobs than p_scan, and
            -- would read every queued one and sort them.
            sort_was := current_setting('enable_sort');
            PERFORM set_config('enable_sort', 'off', true);
            IF cardinality(p_channels) = 1 THEN
                OPEN cur FOR
                    SELECT j.id, j.channel, j.name, j.tenant, j.group_key
                    FROM {schema}.jobs j
                    WHERE j.state = 'queued' AND j.channel = p_channels[1]
                      AND j.run_at <= now_ts
                      AND (p_include IS NULL OR j.name = ANY (p_include))
                      AND (p_exclude IS NULL OR j.name <> ALL (p_exclude))
                      AND NOT EXISTS (SELECT 1 FROM {schema}.paused_channels q
                                      WHERE q.channel = p_channels[1])
                      AND (j.group_key IS NULL OR j.name = ANY (group_free)
                           OR NOT EXISTS (SELECT 1 FROM {schema}.running_groups g
                                          WHERE g.group_key = j.group_key))
                    ORDER BY j.priority, j.run_at, j.id
                    LIMIT p_scan;
            ELSE
                OPEN cur FOR
                    SELECT j.id, j.channel, j.name, j.tenant, j.group_key
                    FROM {schema}.jobs j
                    WHERE j.state = 'queued'
                      AND (p_channels IS NULL OR array_position(p_channels, j.channel) IS NOT NULL)
                      AND j.channel NOT IN (SELECT q.channel FROM {schema}.paused_channels q)
                      AND j.run_at <= now_ts
                      AND (p_include IS NULL OR j.name = ANY (p_include))
                      AND (p_exclude IS NULL OR j.name <> ALL (p_exclude))
                      AND (j.group_key IS NULL OR j.name = ANY (group_free)
                           OR NOT EXISTS (SELECT 1 FROM {schema}.running_groups g
                                          WHERE g.group_key = j.group_key))
                    ORDER BY j.priority, j.run_at, j.id
                    LIMIT p_scan;
            END IF;
            PERFORM set_config('enable_sort', sort_was, true);
        ELSE
            pool := '{}';
            FOR pc IN
                WITH RECURSIVE chans AS (
                    (SELECT j.channel FROM {schema}.jobs j
                     WHERE j.state = 'queued' AND p_channels IS NULL
                     ORDER BY j.channel LIMIT 1)
                    UNION ALL
                    SELECT (SELECT j.channel FROM {schema}.jobs j
                            WHERE j.state = 'queued' AND j.channel > c.channel
                            ORDER BY j.channel LIMIT 1)
                    FROM chans c WHERE c.channel IS NOT NULL
                ),
                -- each pair with its head: its first queued job in stream order
                pairs AS (
                    SELECT c.ch AS channel, h.name, h.priority AS hp, h.run_at AS hr, h.id AS hid
                    FROM (SELECT unnest(p_channels)
                          UNION SELECT x.channel FROM chans x WHERE x.channel IS NOT NULL) c(ch)
                    CROSS JOIN LATERAL (
                        SELECT j.name, j.priority, j.run_at, j.id FROM {schema}.jobs j
                        WHERE j.state = 'queued' AND j.channel = c.ch
                        ORDER BY j.name, j.priority, j.run_at, j.id LIMIT 1) h
                    UNION ALL
                    SELECT p.channel, h.name, h.priority, h.run_at, h.id
                    FROM pairs p
                    CROSS JOIN LATERAL (
                        SELECT j.name, j.priority, j.run_at, j.id FROM {schema}.jobs j
                        WHERE j.state = 'queued' AND j.channel = p.channel AND j.name > p.name
                        ORDER BY j.name, j.priority, j.run_at, j.id LIMIT 1) h
                )
                SELECT p.channel, p.name, p.hp, p.hr, p.hid FROM pairs p
                WHERE p.name IS NOT NULL
                  AND p.channel NOT IN (SELECT q.channel FROM {schema}.paused_channels q)
                  AND (p_include IS NULL OR p.name = ANY (p_include))
                  AND (p_exclude IS NULL OR p.name <> ALL (p_exclude))
            LOOP
                -- a full limit without a key holds back the whole pair
                CONTINUE WHEN EXISTS (
                    SELECT 1 FROM generate_subscripts(l_scope, 1) AS k
                    WHERE l_key[k] IS NULL
                      AND ((l_scope[k] = 'name' AND l_target[k] = pc.name)
                           OR (l_scope[k] = 'channel' AND l_target[k] = pc.channel))
                      AND (k || '/n') = ANY (fullkeys));
                fair := (SELECT f.fb FROM unnest(f_channel, f_by) AS f(fc, fb)
                         WHERE f.fc = pc.channel LIMIT 1);
                split := fair;
                IF split IS NULL THEN
                    split := (SELECT l_key[k] FROM generate_subscripts(l_scope, 1) AS k
                              WHERE l_key[k] IS NOT NULL
                                AND ((l_scope[k] = 'name' AND l_target[k] = pc.name)
                                     OR (l_scope[k] = 'channel' AND l_target[k] = pc.channel))
                                AND EXISTS (SELECT 1 FROM unnest(fullkeys) f
                                            WHERE f LIKE k || '/%')
                              ORDER BY k LIMIT 1);
                END IF;
                IF split IS NULL THEN
                    -- from the pair's head on: the index entries before it (of jobs that
                    -- left the queue, until a vacuum removes them) were walked once already,
                    -- by the pairs' scan
                    pool := pool || ARRAY(
                        SELECT j.id FROM {schema}.jobs j
                        WHERE j.state = 'queued' AND j.channel = pc.channel
                          AND (j.name, j.priority, j.run_at, j.id) >= (pc.name, pc.hp, pc.hr, pc.hid)
                          AND j.name <= pc.name  -- see below
                          AND j.run_at <= now_ts AND j.id <> ALL (passed)
                        ORDER BY j.name, j.priority, j.run_at, j.id
                        LIMIT p_scan);
                    CONTINUE;
                END IF;
                -- read per key value, skipping the full ones. A stream's statement orders by
                -- its last key column (name, tenant or group_key) too, compared as a range
                -- (an equality would drop it from the order), or scans it backwards (NULLs
                -- first): only that stream's index gives that order, so the planner cannot
                -- walk the claim index and filter out a backlog that it guessed is small.
                fullvals := ARRAY(
                    SELECT substr(f, length(k::text) + 3)
                    FROM generate_subscripts(l_scope, 1) AS k, unnest(fullkeys) f
                    WHERE l_key[k] = split
                      AND ((l_scope[k] = 'name' AND l_target[k] = pc.name)
                           OR (l_scope[k] = 'channel' AND l_target[k] = pc.channel))
                      AND f LIKE k || '/v%');
                nullfull := EXISTS (
                    SELECT 1 FROM generate_subscripts(l_scope, 1) AS k
                    WHERE l_key[k] = split
                      AND ((l_scope[k] = 'name' AND l_target[k] = pc.name)
                           OR (l_scope[k] = 'channel' AND l_target[k] = pc.channel))
                      AND (k || '/n') = ANY (fullkeys));
                IF split = 'tenant' THEN
                    vals := ARRAY(
                        WITH RECURSIVE v AS (
                            (SELECT j.tenant AS val FROM {schema}.jobs j
                             WHERE j.state = 'queued' AND j.channel = pc.channel
                               AND j.name = pc.name AND j.tenant IS NOT NULL
                             ORDER BY j.tenant LIMIT 1)
                            UNION ALL
                            SELECT (SELECT j.tenant FROM {schema}.jobs j
                                    WHERE j.state = 'queued' AND j.channel = pc.channel
                                      AND j.name = pc.name AND j.tenant > v.val
                                    ORDER BY j.tenant LIMIT 1)
                            FROM v WHERE v.val IS NOT NULL
                        )
                        SELECT v.val FROM v WHERE v.val IS NOT NULL AND v.val <> ALL (fullvals));
                    has_null := NOT nullfull AND coalesce((
                        SELECT j.tenant IS NULL FROM {schema}.jobs j
                        WHERE j.state = 'queued' AND j.channel = pc.channel AND j.name = pc.name
                        ORDER BY j.tenant DESC LIMIT 1), false);
                ELSE
                    vals := ARRAY(
                        WITH RECURSIVE v AS (
                            (SELECT j.group_key AS val FROM {schema}.jobs j
                             WHERE j.state = 'queued' AND j.channel = pc.channel
                               AND j.name = pc.name AND j.group_key IS NOT NULL
                             ORDER BY j.group_key LIMIT 1)
                            UNION ALL
                            SELECT (SELECT j.group_key FROM {schema}.jobs j
                                    WHERE j.state = 'queued' AND j.channel = pc.channel
                                      AND j.name = pc.name AND j.group_key > v.val
                                    ORDER BY j.group_key LIMIT 1)
                            FROM v WHERE v.val IS NOT NULL
                        )
                        SELECT v.val FROM v WHERE v.val IS NOT NULL AND v.val <> ALL (fullvals));
                    has_null := NOT nullfull AND coalesce((
                        SELECT j.group_key IS NULL FROM {schema}.jobs j
                        WHERE j.state = 'queued' AND j.channel = pc.channel AND j.name = pc.name
                        ORDER BY j.group_key DESC LIMIT 1), false);
                END IF;
                -- fair: every value's first jobs come first, so a few per value fill the batch
                per_value := CASE WHEN fair IS NULL THEN p_scan
                                  ELSE least(p_scan, p_scan / greatest(cardinality(vals)
                                              + has_null::integer, 1) + 2) END;
                IF split = 'tenant' THEN
                    pool := pool || ARRAY(
                        SELECT x.id FROM unnest(vals) AS v(val)
                        CROSS JOIN LATERAL (
                            SELECT j.id FROM {schema}.jobs j
                            WHERE j.state = 'queued' AND j.channel = pc.channel
                              AND j.name = pc.name AND j.tenant >= v.val AND j.tenant <= v.val
                              AND j.run_at <= now_ts AND j.id <> ALL (passed)
                            ORDER BY j.tenant, j.priority, j.run_at, j.id
                            LIMIT per_value) x);
                    IF has_null THEN
                        pool := pool || ARRAY(
                            SELECT j.id FROM {schema}.jobs j
                            WHERE j.state = 'queued' AND j.channel = pc.channel
                              AND j.name = pc.name AND j.tenant IS NULL
                              AND j.run_at <= now_ts AND j.id <> ALL (passed)
                            ORDER BY j.tenant, j.priority, j.run_at, j.id
                            LIMIT per_value);
                    END IF;
                ELSE
                    pool := pool || ARRAY(
                        SELECT x.id FROM unnest(vals) AS v(val)
                        CROSS JOIN LATERAL (
                            SELECT j.id FROM {schema}.jobs j
                            WHERE j.state = 'queued' AND j.channel = pc.channel
                              AND j.name = pc.name AND j.group_key >= v.val AND j.group_key <= v.val
                              AND j.run_at <= now_ts AND j.id <> ALL (passed)
                            ORDER BY j.group_key, j.priority, j.run_at, j.id
                            LIMIT per_value) x);
                    IF has_null THEN
                        pool := pool || ARRAY(
                            SELECT j.id FROM {schema}.jobs j
                            WHERE j.state = 'queued' AND j.channel = pc.channel
                              AND j.name = pc.name AND j.group_key IS NULL
                              AND j.run_at <= now_ts AND j.id <> ALL (passed)
                            ORDER BY j.group_key, j.priority, j.run_at, j.id
                            LIMIT per_value);
                    END IF;
                END IF;
            END LOOP;
            OPEN cur FOR
                SELECT c.id, c.channel, c.name, c.tenant, c.group_key
                FROM (SELECT j.id, j.channel, j.name, j.tenant, j.group_key, j.priority, j.run_at,
                             CASE WHEN f.fb IS NULL THEN 1
                                  ELSE row_number() OVER (
                                      PARTITION BY j.channel,
                                          CASE f.fb WHEN 'tenant' THEN j.tenant ELSE j.group_key END
                                      ORDER BY j.priority, j.run_at, j.id) END AS rnd
                      FROM {schema}.jobs j
                      LEFT JOIN (SELECT DISTINCT ON (u.fc) u.fc, u.fb
                                 FROM unnest(f_channel, f_by) AS u(fc, fb)) f ON f.fc = j.channel
                      WHERE j.id = ANY (pool)) c
                ORDER BY c.rnd, c.priority, c.run_at, c.id;
        END IF;

        LOOP
            FETCH cur INTO r;
            EXIT WHEN NOT FOUND;
            EXIT WHEN cardinality(taken) + cardinality(cands) >= p_limit;
            ok := true;
            FOR i IN 1 .. nl LOOP
                IF (l_scope[i] = 'name' AND l_target[i] = r.name)
                   OR (l_scope[i] = 'channel' AND l_target[i] = r.channel) THEN
                    lk := i || '/' || coalesce('v' || CASE l_key[i] WHEN 'tenant' THEN r.tenant
                                                                   WHEN 'group' THEN r.group_key END,
                                               'n');
                    IF coalesce((used ->> lk)::integer, 0) >= l_n[i] THEN
                        ok := false;
                        EXIT;
                    END IF;
                END IF;
            END LOOP;
            IF NOT ok THEN
                held := held + 1;
                CONTINUE;
            END IF;
            -- (two IFs: the outer test is a plain expression, and the lookup, a query,
            -- runs only for a job whose group rule applies)
            IF r.group_key IS NOT NULL AND r.name <> ALL (group_free) THEN
                -- (a group busy only with a job this claim admitted stays readable: that
                -- job may lose its row lock, and the group is then free again)
                IF r.group_key = ANY (taken_groups) THEN
                    held := held + 1;
                    CONTINUE;
                END IF;
                IF EXISTS (SELECT 1 FROM {schema}.running_groups g
                           WHERE g.group_key = r.group_key) THEN
                    held := held + 1;
                    passed := passed || r.id;
                    CONTINUE;
                END IF;
            END IF;
            cands := cands || r.id;
            passed := passed || r.id;
            IF r.group_key IS NOT NULL AND r.name <> ALL (group_free) THEN
                taken_groups := taken_groups || r.group_key;
            END IF;
            FOR i IN 1 .. nl LOOP
                IF (l_scope[i] = 'name' AND l_target[i] = r.name)
                   OR (l_scope[i] = 'channel' AND l_target[i] = r.channel) THEN
                    lk := i || '/' || coalesce('v' || CASE l_key[i] WHEN 'tenant' THEN r.tenant
                                                                   WHEN 'group' THEN r.group_key END,
                                               'n');
                    used := jsonb_set(used, ARRAY[lk],
                                      to_jsonb(coalesce((used ->> lk)::integer, 0) + 1));
                END IF;
            END LOOP;
        END LOOP;
        CLOSE cur;
        -- the admitted rows' locks, in one statement (SKIP LOCKED: a row another claimer
        -- holds, or that left the queue since it was read, is not taken; its counts
        -- and group go back, and the next pass may fill its place)
        got := ARRAY(SELECT x.id FROM unnest(cands) AS c(id)
                     CROSS JOIN LATERAL (
                         SELECT j.id FROM {schema}.jobs j
                         WHERE j.id = c.id AND j.state = 'queued'
                         FOR UPDATE SKIP LOCKED) x);
        IF cardinality(got) < cardinality(cands) THEN
            FOR r IN
                SELECT j.id, j.channel, j.name, j.tenant, j.group_key
                FROM unnest(cands) AS c(id)
                CROSS JOIN LATERAL (
                    SELECT j.id, j.channel, j.name, j.tenant, j.group_key
                    FROM {schema}.jobs j WHERE j.id = c.id) j
                WHERE c.id <> ALL (got)
            LOOP
                held := held + 1;
                IF r.group_key IS NOT NULL AND r.name <> ALL (group_free) THEN
                    taken_groups := array_remove(taken_groups, r.group_key);
                END IF;
                FOR i IN 1 .. nl LOOP
                    IF (l_scope[i] = 'name' AND l_target[i] = r.name)
                       OR (l_scope[i] = 'channel' AND l_target[i] = r.channel) THEN
                        lk := i || '/' || coalesce('v' || CASE l_key[i] WHEN 'tenant' THEN r.tenant
                                                                       WHEN 'group' THEN r.group_key END,
                                                   'n');
                        used := jsonb_set(used, ARRAY[lk],
                                          to_jsonb((used ->> lk)::integer - 1));
                    END IF;
                END LOOP;
            END LOOP;
            cands := ARRAY(SELECT c.id FROM unnest(cands) WITH ORDINALITY AS c(id, o)
                           WHERE c.id = ANY (got) ORDER BY c.o);
        END IF;
        taken := taken || cands;
        EXIT WHEN cardinality(taken) >= p_limit OR held = 0 OR pass >= 3;
    END LOOP;

    IF cardinality(taken) = 0 THEN
        RETURN;
    END IF;
    -- groups in group_key order, as the plain claim takes them (no waiting in a cycle);
    -- one taken by a concurrent claimer since the check above drops its job (taken_groups
    -- holds the groups of the taken jobs whose group rule applies: none, nothing to do)
    IF cardinality(taken_groups) > 0 THEN
        WITH want AS (
            SELECT j.id, j.group_key FROM {schema}.jobs j
            WHERE j.id = ANY (taken) AND j.group_key IS NOT NULL AND j.name <> ALL (group_free)
        ),
        ins AS (
            INSERT INTO {schema}.running_groups (group_key, job_id)
            SELECT w.group_key, w.id FROM want w ORDER BY w.group_key
            ON CONFLICT (group_key) DO NOTHING
            RETURNING job_id
        )
        SELECT coalesce(array_agg(w.id), '{}') INTO lost
        FROM want w WHERE w.id NOT IN (SELECT s.job_id FROM ins s);
        IF cardinality(lost) > 0 THEN
            taken := ARRAY(SELECT t.id FROM unnest(taken) WITH ORDINALITY AS t(id, o)
                           WHERE t.id <> ALL (lost) ORDER BY t.o);
        END IF;
    END IF;

    RETURN QUERY
    WITH claimed AS (
        UPDATE {schema}.jobs j
        SET state = 'running',
            attempts = j.attempts + 1,
            lease_token = p_token,
            lease_expires_at = to_timestamp(p_lease),
            started_at = now_ts,
            worker_id = p_worker,
            cancel_requested = false
        WHERE j.id = ANY (taken)
        RETURNING j.id, j.name, j.payload, j.attempts, j.max_attempts, j.channel, j.priority,
                  j.tenant, j.group_key, j.tags, j.options, j.run_at, j.created_at,
                  j.remove_on_complete, j.stalls, j.max_stalls
    ),
    started AS (
        INSERT INTO {schema}.job_events (job_id, type, job_name, tenant, attempt, at, data)
        SELECT c.id, 'started', c.name, c.tenant, c.attempts, now_ts, NULL
        FROM claimed c
        ORDER BY c.id
    ),
    -- one start per job and limit identity, in the span [s, s + w) that holds now
    -- (w: conveyor.limits.rate_span(per), the shortest of the identity's windows),
    -- stored with its end s + w (an end that the float arithmetic rounds to before
    -- now is stored as now: a span never ends before its latest start)
    starts AS (
        INSERT INTO {schema}.limit_starts AS s (lim, keyval, at, n, latest)
        SELECT l.scope || ':' || coalesce(l.key, '') || ':' || l.target,
               CASE l.key WHEN 'tenant' THEN c.tenant WHEN 'group' THEN c.group_key END,
               greatest(to_timestamp((floor(p_now / l.w) + 1) * l.w), now_ts),
               count(*), now_ts
        FROM claimed c
        JOIN (SELECT u.scope, u.target, u.key, min(least(u.per / 50, 1)) AS w
              FROM unnest(l_scope, l_target, l_key, l_per) AS u(scope, target, key, per)
              WHERE u.per IS NOT NULL
              GROUP BY u.scope, u.target, u.key) l
          ON (CASE l.scope WHEN 'name' THEN c.name ELSE c.channel END) = l.target
        GROUP BY 1, 2, 3
        ON CONFLICT (lim, at, (coalesce('v' || keyval, 'n')))
        DO UPDATE SET n = s.n + EXCLUDED.n, latest = greatest(s.latest, EXCLUDED.latest)
    )
    SELECT c.id, c.name, c.payload, c.attempts, c.max_attempts, c.channel, c.priority,
           c.tenant, c.group_key, c.tags, c.options, extract(epoch FROM c.run_at)::float8,
           extract(epoch FROM c.created_at)::float8, c.remove_on_complete, c.stalls,
           c.max_stalls, array_position(taken, c.id)
    FROM claimed c
    ORDER BY array_position(taken, c.id);
END
$fn$;
