-- retry: a failed or cancelled job is queued again with fresh attempts and no stalls
-- (progress, result and start/finish times cleared); its errors, steps and tokens are
-- kept.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = job id, ARGV[3] = now, ARGV[4] = order_key(now)
-- Returns: {"retried", nil} | {"missing", nil} | {"not_retryable", the job's current state}
local id, now, ord = ARGV[2], ARGV[3], ARGV[4]
local j = fields(id, CORE)
if not j.state then return {"missing", false} end
if j.state ~= "failed" and j.state ~= "cancelled" then return {"not_retryable", j.state} end
detach(id, j)
move_state(id, j.channel, j.state, "queued")
local jk = K.job(id)
redis.call("HSET", jk, "state", "queued", "attempts", "0", "progress", "0", "run_at", now,
           "ord", ord)
redis.call("HDEL", jk, "finished_at", "started_at", "result", "cancel_requested", "stalls",
           "wait_token")
place_queued(id, j.channel, j.priority, ord, j.group_key, now)
emit(id, "enqueued", j.name, j.tenant, "0", now, '{"retry": true}')
return {"retried", false}
