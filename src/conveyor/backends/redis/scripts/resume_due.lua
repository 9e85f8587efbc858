-- resume_due: up to `limit` waiting jobs whose run_at <= now become queued at now
-- (wait_token cleared, a `resumed` event: {"reason": "due"}, or {"reason": "expired",
-- "token": id} for a job that waited on a token, which is marked expired if still
-- pending). Found through P wait (waiting jobs only, by run_at), never by a scan; each
-- job is resumed once however many callers race (the script checks it still waits).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = order_key(now), ARGV[4] = limit
-- Returns: one array per resumed job: id, name, tenant|nil, attempts, the token this
--   call expired|nil
local now, ord = ARGV[2], ARGV[3]
local ids = redis.call("ZRANGEBYSCORE", K.wait, "-inf", now, "LIMIT", 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local j = fields(id, WAITING_FIELDS)
  if j.state == "waiting" then
    local tid, expired, data = j.wait_token, false, '{"reason": "due"}'
    if tid then
      data = cjson.encode({reason = "expired", token = tid})
      if redis.call("HGET", K.token(tid), "state") == "pending" then
        redis.call("HSET", K.token(tid), "state", "expired")
        expired = tid
      end
    end
    resume_waiting(id, j, now, ord, data)
    out[#out + 1] = {id, j.name, nf(j.tenant), j.attempts or "0", expired}
  else
    zrem_later(K.wait, id)  -- not waiting any more (cannot happen: every exit removes it)
  end
end
return out
