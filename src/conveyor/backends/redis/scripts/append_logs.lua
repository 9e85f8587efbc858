-- append_logs: add handler log lines to their jobs, fenced like an outcome: a line is
-- stored only while its job is running under that lease token (a stale worker's lines,
-- and those of a job that finished or was removed, are dropped).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2..] = groups of 6: job id, lease token, at, level, message, attempt
-- Returns: the number of lines stored
local stored = 0
local held = {}  -- job id -> {token, whether the job runs under it}: one read per job
for i = 2, #ARGV, 6 do
  local id, token = ARGV[i], ARGV[i + 1]
  local h = held[id]
  if not h or h[1] ~= token then
    local j = fields(id, {"state", "lease_token"})
    h = {token, j.state == "running" and j.lease_token == token}
    held[id] = h
  end
  if h[2] then
    local line = cjson.encode({at = ARGV[i + 2], level = ARGV[i + 3], message = ARGV[i + 4],
                               attempt = tonumber(ARGV[i + 5]) or 0})
    if redis.call("RPUSH", K.logs(id), line) > MAX_LOGS then
      redis.call("LTRIM", K.logs(id), -MAX_LOGS, -1)
    end
    stored = stored + 1
  end
end
return stored
