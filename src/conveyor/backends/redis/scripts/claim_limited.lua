-- claim_limited: claim.lua for a claim with limits or fairness (see claim_limited in
-- _lib_limits.lua): the same arguments and reply, the arguments followed by the limits:
-- count, then 5 values each (scope, target, key|"", n, per|""), and the fairness: count,
-- then (channel, column) pairs ("tenant" | "group").
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2..] = as claim.lua, then the limits and fairness
-- Returns: as claim.lua
return claim_jobs(ARGV, 2, claim_limited)
