-- complete_claim: the worker's steady-state cycle in one call: apply a batch of fenced
-- outcomes exactly like complete.lua, then claim exactly like claim.lua. The claim sees
-- what the outcomes changed (a job they requeued, a group they freed).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = seconds a removed job's events are kept, ARGV[3] = n, then
--   n times 16 values (one outcome each, as in complete.lua), then, from
--   ARGV[4 + 16 * n]: worker id, lease token, limit, now, order_key(now),
--   lease_expires_at, and the three counted lists channels, include, exclude (as in
--   claim.lua)
-- Returns: {one code per outcome, in input order (as complete.lua); one array per claimed job
--   (as claim.lua); 1 if the outcomes made work available (queued a job, freed a group
--   with a queued member), else 0}
local applied, i = complete_outcomes(ARGV, 2)
local woke = woke_any() and 1 or 0
return {applied, claim_jobs(ARGV, i), woke}
