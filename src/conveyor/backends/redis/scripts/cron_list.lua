-- cron_list: every stored schedule (read-only).
-- KEYS[1] = P id
-- ARGV[1] = P
-- Returns: one flat HGETALL array per schedule
local out = {}
for _, name in ipairs(redis.call("SMEMBERS", K.crons)) do
  local flat = redis.call("HGETALL", K.cron(name))
  if #flat > 0 then out[#out + 1] = flat end
end
return out
