-- cron_pause: pause or resume a schedule and set its next run ("" keeps the current one).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = name, ARGV[3] = paused ("1"|"0"), ARGV[4] = next_run_at|""
-- Returns: 1 if the schedule exists, else 0
local key = K.cron(ARGV[2])
if redis.call("EXISTS", key) == 0 then return 0 end
redis.call("HSET", key, "paused", ARGV[3])
if ARGV[4] ~= "" then redis.call("HSET", key, "next_run_at", ARGV[4]) end
return 1
