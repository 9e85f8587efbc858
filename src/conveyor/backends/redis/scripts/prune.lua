-- prune: delete up to `limit` jobs in a terminal state finished before a time, with
-- their events, logs and idempotency keys; and the lanes no claim uses any more.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = state, ARGV[3] = finished_before (exclusive), ARGV[4] = limit
-- Returns: the jobs deleted, flat: id, name, tenant ("" for none), attempts, ...
-- lanes whose claims stopped (their P lon:<channel> expired) go too (see _lib.lua)
for _, ch in ipairs(redis.call("SMEMBERS", K.lchans)) do
  if redis.call("EXISTS", K.lon(ch)) == 0 then
    lanes_drop(ch)
    redis.call("SREM", K.lchans, ch)
  end
end
local key = K.done(ARGV[2])
local ids = redis.call("ZRANGEBYSCORE", key, "-inf", "(" .. ARGV[3], "LIMIT", 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local j = fields(id, CORE)
  if j.state then
    delete_job(id, j)
    out[#out + 1] = id
    out[#out + 1] = j.name or ""
    out[#out + 1] = j.tenant or ""
    out[#out + 1] = j.attempts or "0"
  else
    zrem_later(key, id)
  end
end
return out
