-- set_progress: store a running job's progress, fenced by its lease token.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = job id, ARGV[3] = token, ARGV[4] = progress (0..100),
-- ARGV[5] = now, ARGV[6] = event data (JSON)|"" ("" = store no event)
-- Returns: 1 if stored, 0 if the job is not running under that token
local id, token, progress, now, data = ARGV[2], ARGV[3], ARGV[4], ARGV[5], nz(ARGV[6])
local j = fields(id, {"state", "lease_token", "name", "tenant", "attempts"})
if j.state ~= "running" or j.lease_token ~= token then return 0 end
redis.call("HSET", K.job(id), "progress", progress)
if data then emit(id, "progress", j.name, j.tenant, j.attempts, now, data) end
return 1
