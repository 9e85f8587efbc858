-- complete: apply a batch of fenced outcomes decided by the core (see complete_outcomes
-- in _lib_worker.lua). Each applies only if the job is still running under that lease token
-- (and, for a rescue, its lease expired at or before expired_before); otherwise it
-- changes nothing.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = seconds a removed job's events are kept (its retention),
-- ARGV[3] = n, then n times 16 values:
--   job id, token, new state, at, event type, run_at|"", order_key(run_at)|"" (a wait on
--   a token: order_key(at)), result (JSON)|"", error record (JSON)|"", refund_attempt
--   ("1"|"0"), remove ("1"|"0"), expired_before|"", event data (JSON)|"", stall
--   ("1"|"0"), wait_token|"", yields to a cancel ("1"|"0")
-- Returns: one code per outcome, in input order: 0 not applied, 1 applied, 2 stored as
-- cancelled instead, 3 stored as a resumed requeue instead (see apply_outcome).
local out = complete_outcomes(ARGV, 2)
return out
