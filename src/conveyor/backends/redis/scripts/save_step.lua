-- save_step: store a step of a running job, fenced by its lease token (and, with a new
-- token, that token, pending, in the same call: a step and its token exist together or
-- not at all). A step of that name already stored is kept as it is (the first result
-- stands), and no token is stored with the refused one.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = job id, ARGV[3] = lease token, ARGV[4] = step name,
-- ARGV[5] = result (JSON), ARGV[6] = at, ARGV[7] = new token id|"",
-- ARGV[8] = its expires_at|"" (never), ARGV[9] = its tags (JSON list)
-- Returns: 1 if the job runs under that lease token (step stored, or kept), else 0;
--   an error if the new token's id is taken already (nothing stored)
local id, token, name, result, at = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local tid = nz(ARGV[7])
local j = fields(id, {"state", "lease_token"})
if j.state ~= "running" or j.lease_token ~= token then return 0 end
local key = K.steps(id)
if redis.call("HEXISTS", key, name) == 1 then return 1 end
if tid and redis.call("EXISTS", K.token(tid)) == 1 then
  return redis.error_reply("conveyor: token id " .. tid .. " is taken already")
end
-- steps are never deleted one by one, so the hash's length numbers them in storing order
local n = redis.call("HLEN", key) + 1
redis.call("HSET", key, name, int_str(n) .. " " .. at .. " " .. result)
if tid then
  local h = {"job_id", id, "state", "pending", "tags", ARGV[9], "created_at", at}
  local expires_at = nz(ARGV[8])
  if expires_at then h[#h + 1] = "expires_at"; h[#h + 1] = expires_at end
  redis.call("HSET", K.token(tid), unpack(h))
  redis.call("RPUSH", K.job_tokens(id), tid)
  redis.call("HSET", K.job(id), "has_tokens", "1")
end
return 1
