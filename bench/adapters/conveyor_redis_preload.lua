-- Scenario E for conveyor-redis: store finished ("completed") jobs ids first..last the way
-- conveyor's enqueue.lua + complete.lua leave them (job hash, P all, P st:completed,
-- P done:completed), without their event lists. The caller bumps P id and the counts.
-- KEYS[1] = P all, KEYS[2] = P st:completed, KEYS[3] = P done:completed
-- ARGV[1] = job key prefix (P job:), ARGV[2] = first id, ARGV[3] = last id,
-- ARGV[4] = finished_at of the first job (each next one 1 ms later),
-- ARGV[5] = run_at, ARGV[6] = order key of run_at
local first, last = tonumber(ARGV[2]), tonumber(ARGV[3])
local t0 = tonumber(ARGV[4])
for id = first, last do
  local sid = string.format("%d", id)
  local finished = string.format("%.3f", t0 + (id - first) / 1000)
  redis.call("HSET", ARGV[1] .. sid, "id", sid, "name", "noop",
             "payload", '{"n": -' .. sid .. '}', "run_at", ARGV[5], "ord", ARGV[6],
             "priority", "0", "channel", "default", "max_attempts", "1", "attempts", "1",
             "progress", "100", "remove_on_complete", "0", "tags", "[]",
             "created_at", ARGV[5], "started_at", finished, "finished_at", finished,
             "state", "completed")
  redis.call("ZADD", KEYS[1], id, sid)
  redis.call("ZADD", KEYS[2], id, sid)
  redis.call("ZADD", KEYS[3], finished, sid)
end
return last - first + 1
