-- channel_stats: per channel, the number of jobs in each state and the run_at of the
-- oldest queued job (read-only). Channels without any job are left out.
-- KEYS[1] = P id
-- ARGV[1] = P
-- Returns: one array per channel: channel, {state, count, ...}, oldest run_at | nil
local out = {}
for _, ch in ipairs(redis.call("SMEMBERS", K.channels)) do
  local flat = redis.call("HGETALL", K.counts(ch))
  local counts, any = {}, false
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) > 0 then
      counts[#counts + 1] = flat[i]
      counts[#counts + 1] = flat[i + 1]
      any = true
    end
  end
  if any then
    local oldest = redis.call("ZRANGE", K.queued_at(ch), 0, 0, "WITHSCORES")
    out[#out + 1] = {ch, counts, oldest[2] or false}
  end
end
return out
