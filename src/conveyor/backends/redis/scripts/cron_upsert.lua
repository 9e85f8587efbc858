-- cron_upsert: create or replace a schedule, keeping last_run_at and last_job_id.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = name, ARGV[3] = expression, ARGV[4] = job name,
-- ARGV[5] = payload (JSON), ARGV[6] = timezone, ARGV[7] = paused ("1"|"0"),
-- ARGV[8] = allow_overlap ("1"|"0"), ARGV[9] = catch_up seconds|"",
-- ARGV[10] = options (JSON)|"", ARGV[11] = next_run_at|"", ARGV[12] = last_run_at|"",
-- ARGV[13] = last_job_id|"" (the last two are used only when the schedule is new)
-- Returns: 1
local key = K.cron(ARGV[2])
if redis.call("EXISTS", key) == 0 then
  if ARGV[12] ~= "" then redis.call("HSET", key, "last_run_at", ARGV[12]) end
  if ARGV[13] ~= "" then redis.call("HSET", key, "last_job_id", ARGV[13]) end
end
redis.call("HSET", key, "name", ARGV[2], "expression", ARGV[3], "job", ARGV[4],
           "payload", ARGV[5], "timezone", ARGV[6], "paused", ARGV[7],
           "allow_overlap", ARGV[8])
local optional = {catch_up = ARGV[9], options = ARGV[10], next_run_at = ARGV[11]}
for field, value in pairs(optional) do
  if value == "" then redis.call("HDEL", key, field) else redis.call("HSET", key, field, value) end
end
redis.call("SADD", K.crons, ARGV[2])
return 1
