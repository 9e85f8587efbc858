-- append_logs: add handler log lines to their jobs (lines of a removed job are dropped).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2..] = groups of 5: job id, at, level, message, attempt
-- Returns: the number of lines stored
local stored = 0
for i = 2, #ARGV, 5 do
  local id = ARGV[i]
  if redis.call("EXISTS", K.job(id)) == 1 then
    local line = cjson.encode({at = ARGV[i + 1], level = ARGV[i + 2], message = ARGV[i + 3],
                               attempt = tonumber(ARGV[i + 4]) or 0})
    if redis.call("RPUSH", K.logs(id), line) > MAX_LOGS then
      redis.call("LTRIM", K.logs(id), -MAX_LOGS, -1)
    end
    stored = stored + 1
  end
end
return stored
