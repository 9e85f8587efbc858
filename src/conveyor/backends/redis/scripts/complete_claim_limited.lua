-- complete_claim_limited: complete_claim.lua whose claim has limits or fairness (its
-- claim arguments followed by them, as in claim_limited.lua).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2..] = as complete_claim.lua, then the limits and fairness
-- Returns: as complete_claim.lua
local applied, i = complete_outcomes(ARGV, 2)
local woke = woke_any() and 1 or 0
return {applied, claim_jobs(ARGV, i, claim_limited), woke}
