-- cron_delete: remove schedules by name.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2..] = names
-- Returns: how many existed
local n = 0
for i = 2, #ARGV do
  n = n + redis.call("DEL", K.cron(ARGV[i]))
  redis.call("SREM", K.crons, ARGV[i])
end
return n
