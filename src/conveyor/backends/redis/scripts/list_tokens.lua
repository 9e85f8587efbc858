-- list_tokens: a job's tokens, oldest first (read-only).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = job id
-- Returns: one array per token: token id, its hash as a flat HGETALL array
local out = {}
for _, tid in ipairs(redis.call("LRANGE", K.job_tokens(ARGV[2]), 0, -1)) do
  local flat = redis.call("HGETALL", K.token(tid))
  if #flat > 0 then out[#out + 1] = {tid, flat} end
end
return out
