-- promote_due: scheduled -> queued for jobs with run_at <= until (now + horizon). Workers
-- are woken only if a promoted job is due already; for jobs promoted ahead of time the
-- caller wakes its own worker at the returned time (a full claim then wakes others).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = until, ARGV[4] = limit
-- Returns: {count promoted, earliest run_at among them that is still after now | nil}
local now = tonumber(ARGV[2])
local ids = redis.call("ZRANGEBYSCORE", K.due, "-inf", ARGV[3], "LIMIT", 0, tonumber(ARGV[4]))
local n, earliest, earliest_n, due_now = 0, false, nil, false
for _, id in ipairs(ids) do
  local j = promote(id)
  if j then
    n = n + 1
    local t = tonumber(j.run_at)
    if t > now then
      if not earliest_n or t < earliest_n then earliest, earliest_n = j.run_at, t end
    else
      due_now = true
    end
  end
end
if not due_now then
  for channel in pairs(WAKE) do WAKE[channel] = nil end
end
return {n, earliest}
