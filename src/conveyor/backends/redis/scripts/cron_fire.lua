-- cron_fire: fire one tick of a schedule. A compare-and-swap on next_run_at (so any
-- number of processes fire each tick once; a paused schedule never fires) and the
-- job's enqueue, in one step.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = name, ARGV[3] = expected next_run_at, ARGV[4] = new
-- next_run_at|"", ARGV[5] = tick, ARGV[6] = now, ARGV[7] = "1" if a job follows,
-- ARGV[8..22] = the job, as one job of enqueue.lua
-- Returns: {1 if the swap won else 0, job id | nil}
local key = K.cron(ARGV[2])
local cur = redis.call("HMGET", key, "next_run_at", "paused")
if not cur[1] or tonumber(cur[1]) ~= tonumber(ARGV[3]) or cur[2] == "1" then return {0, false} end
local id = false
if ARGV[7] == "1" then id = enqueue_one(ARGV, 8, ARGV[6]) end
redis.call("HSET", key, "last_run_at", ARGV[5])
if id then redis.call("HSET", key, "last_job_id", id) end
if ARGV[4] == "" then
  redis.call("HDEL", key, "next_run_at")
else
  redis.call("HSET", key, "next_run_at", ARGV[4])
end
return {1, id}
