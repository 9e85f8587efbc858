-- heartbeat: renew the leases of a worker's running jobs in one call.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = new lease_expires_at,
-- ARGV[4..] = job id, lease token pairs
-- Returns: {ids no longer running under that token}, {ids whose cancel was requested}
local lease_exp = ARGV[3]
local lost, cancel = {}, {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local j = fields(id, {"state", "lease_token", "cancel_requested"})
  if j.state == "running" and j.lease_token == token then
    redis.call("HSET", K.job(id), "lease_expires_at", lease_exp)
    zadd_later(K.leases, lease_exp, id)
    if j.cancel_requested then cancel[#cancel + 1] = id end
  else
    lost[#lost + 1] = id
  end
end
return {lost, cancel}
