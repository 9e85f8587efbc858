-- wait_release: end this waiter's standing claim and take what was handed to it but not
-- popped yet (a hand-off that raced with the end of its wait). Once this ran, nothing more
-- is handed to the waiter until it registers again.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = waiter id, ARGV[3] = now
-- Returns: the members that were in P hand:<waiter id> (JSON [token, row, ...]), each
--   with only the rows whose job is still running under that token with a lease that has
--   not expired at `now` (the others were rescued or are about to be); members left
--   without rows are dropped.
redis.call("HDEL", K.waiters, ARGV[2])
local key = K.hand(ARGV[2])
local items = redis.call("ZRANGE", key, 0, -1)
if #items == 0 then return {} end
redis.call("DEL", key)
local now = tonumber(ARGV[3])
local out = {}
for _, text in ipairs(items) do
  local ok, item = pcall(cjson.decode, text)
  if ok and type(item) == "table" then
    local token = item[1]
    local keep, dropped = {token}, false
    for r = 2, #item do
      local v = redis.call("HMGET", K.job(item[r][1]), "state", "lease_token",
                           "lease_expires_at")
      if v[1] == "running" and v[2] == token and (tonumber(v[3]) or 0) > now then
        keep[#keep + 1] = item[r]
      else
        dropped = true
      end
    end
    if #keep > 1 then out[#out + 1] = dropped and cjson.encode(keep) or text end
  end
end
return out
