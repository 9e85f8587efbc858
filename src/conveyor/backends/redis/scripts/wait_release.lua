-- wait_release: end this waiter's standing claim and take what was handed to it but not
-- popped yet (a hand-off that raced with the end of its wait, or whose reply was lost
-- with its connection). Once this ran, nothing more is handed to the waiter until it
-- registers again.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = waiter id, ARGV[3] = now,
-- ARGV[4] = the new lease_expires_at of the jobs taken, or "" to give them back
-- Returns: the members that were in P hand:<waiter id> (JSON [token, row, ...]), each
--   with only the rows whose job is still running under that token (the others were
--   rescued meanwhile); members left without rows are dropped. Those jobs' leases now
--   end at ARGV[4], also when they had run out: the waiter is here to run them, and a
--   rescue that read the old lease finds it renewed and changes nothing. With ARGV[4] = ""
--   (the waiter is closing) they are given back instead: queued again where they were,
--   their attempt refunded and a `retrying` event (reason "worker stopping", dated no
--   earlier than the hand-off), as a drained job; they never ran.
redis.call("HDEL", K.waiters, ARGV[2])
local key = K.hand(ARGV[2])
local items = redis.call("ZRANGE", key, 0, -1)
if #items == 0 then return {} end
redis.call("DEL", key)
local now, renew = ARGV[3], nz(ARGV[4])
local names = {"state", "lease_token", "channel", "group_key", "ord", "priority", "run_at",
               "name", "tenant", "attempts", "started_at"}

local function give_back(id, j)
  detach(id, j)  -- its lease, and its group's lock
  local attempts = math.max((tonumber(j.attempts) or 1) - 1, 0)
  redis.call("HSET", K.job(id), "state", "queued", "attempts", attempts, "lease_token", "",
             "lease_expires_at", "", "worker_id", "")
  move_state(id, j.channel, "running", "queued")
  place_queued(id, j.channel, j.priority, j.ord, j.group_key, j.run_at)
  local at = now
  if j.started_at and tonumber(j.started_at) > tonumber(now) then at = j.started_at end
  emit(id, "retrying", j.name, j.tenant, j.attempts, at, '{"reason": "worker stopping"}')
end

local out = {}
for _, text in ipairs(items) do
  local ok, item = pcall(cjson.decode, text)
  if ok and type(item) == "table" then
    local token = item[1]
    local keep, dropped = {token}, false
    for r = 2, #item do
      local id = tostring(item[r][1])
      local j = fields(id, names)
      if j.state == "running" and j.lease_token == token then
        keep[#keep + 1] = item[r]
        if renew then
          redis.call("HSET", K.job(id), "lease_expires_at", renew)
          zadd_later(K.leases, renew, id)
        else
          give_back(id, j)
        end
      else
        dropped = true
      end
    end
    if #keep > 1 then out[#out + 1] = dropped and cjson.encode(keep) or text end
  end
end
return out
