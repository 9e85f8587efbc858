-- expired_leases: running jobs whose lease expired at or before now (read-only).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = limit
-- Returns: one array per job: id, token, name, tenant, attempts, max_attempts, options,
--   cancel_requested ("1"|nil), stalls, max_stalls
local ids = redis.call("ZRANGEBYSCORE", K.leases, "-inf", ARGV[2], "LIMIT", 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local r = redis.call("HMGET", K.job(id), "state", "lease_token", "name", "tenant", "attempts",
                       "max_attempts", "options", "cancel_requested", "stalls",
                       "max_stalls")
  if r[1] == "running" and nz(r[2]) then
    out[#out + 1] = {id, r[2], r[3], nf(r[4]), r[5], r[6], nf(r[7]), nf(r[8]),
                     nz(r[9]) or "0", nz(r[10]) or "1"}
  end
end
return out
