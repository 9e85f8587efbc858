-- claim: take up to `limit` due queued jobs for one worker, in priority, run_at, id
-- order, across the allowed channels. Due scheduled jobs are promoted first (bounded),
-- so they start at once. Paused channels are skipped (nothing is claimed while every
-- channel is paused). Skipped jobs (not
-- due yet, name filtered) stay where they are; a busy group never blocks the scan (only
-- a free group's first member sits in a ready set). At most CLAIM_SCAN entries beyond
-- the claimed ones are examined per call.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = worker id, ARGV[3] = lease token, ARGV[4] = limit,
-- ARGV[5] = now, ARGV[6] = order_key(now), ARGV[7] = lease_expires_at,
-- ARGV[8..] = three counted lists (count, then values; count -1 = no filter):
--   channels, include (names), exclude (names)
-- Returns: one array per claimed job: id, name, payload, attempts, max_attempts,
--   channel, priority, tenant, group_key, tags, options, run_at, created_at,
--   remove_on_complete
local PROMOTE_BATCH = 200
local CLAIM_SCAN = 1000
local CHUNK = 64
local READ = {"state", "name", "group_key", "payload", "attempts", "max_attempts",
              "priority", "tenant", "tags", "options", "run_at", "created_at",
              "remove_on_complete"}

local worker, token, limit = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now, now_ord, lease_exp = ARGV[5], ARGV[6], ARGV[7]
local channels, i = read_list(ARGV, 8)
local include, exclude
include, i = read_list(ARGV, i)
exclude, i = read_list(ARGV, i)

for _, id in ipairs(redis.call("ZRANGEBYSCORE", K.due, "-inf", now, "LIMIT", 0, PROMOTE_BATCH)) do
  promote(id)
end
if limit <= 0 then return {} end

if redis.call("EXISTS", K.paused_all) == 1 then return {} end
local paused = as_set(redis.call("SMEMBERS", K.paused))
if not channels then channels = redis.call("SMEMBERS", K.channels) end
local inc = include and as_set(include)
local exc = exclude and as_set(exclude)

-- one cursor per channel; `offset` counts the examined entries still in the set
-- (claimed entries are removed only at the end)
local cursors, seen = {}, {}
for _, ch in ipairs(channels) do
  if not paused[ch] and not seen[ch] then
    seen[ch] = true
    cursors[#cursors + 1] = {key = K.ready(ch), ch = ch, items = {}, pos = 1, offset = 0,
                             done = false, taken = {}}
  end
end

local function head(c)
  if c.pos > #c.items then
    if c.done then return nil end
    c.items = redis.call("ZRANGE", c.key, c.offset, c.offset + CHUNK - 1, "WITHSCORES")
    c.pos = 1
    if #c.items < 2 * CHUNK then c.done = true end
    if #c.items == 0 then return nil end
  end
  return c.items[c.pos], tonumber(c.items[c.pos + 1])
end

-- "take" (with the job's fields), "skip" (stays in place) or "gone" (stale, removed)
local function verdict(c, m, id)
  if string.sub(m, 1, 16) > now_ord then return "skip" end
  local v = redis.call("HMGET", K.job(id), unpack(READ))
  if v[1] ~= "queued" then
    redis.call("ZREM", c.key, m)
    return "gone"
  end
  if inc and not inc[v[2]] then return "skip" end
  if exc and exc[v[2]] then return "skip" end
  local g = nz(v[3])
  if g and redis.call("HEXISTS", K.glock, g) == 1 then return "skip" end
  return "take", v
end

local function take(c, m, id, v)
  c.taken[#c.taken + 1] = m
  local g = nz(v[3])
  if g then
    redis.call("ZREM", K.gq(g), m)
    redis.call("HDEL", K.grep, g)
    redis.call("HSET", K.glock, g, id)
  end
  local attempts = (tonumber(v[5]) or 0) + 1
  redis.call("HSET", K.job(id), "state", "running", "attempts", attempts,
             "lease_token", token, "lease_expires_at", lease_exp, "started_at", now,
             "worker_id", worker)
  move_state(id, c.ch, "queued", "running")
  zrem_later(K.queued_at(c.ch), id)
  zadd_later(K.leases, lease_exp, id)
  emit(id, "started", v[2], v[8], attempts, now, nil)
  return {id, v[2], v[4], attempts, v[6], c.ch, v[7], nf(v[8]), nf(g), v[9], nf(v[10]),
          v[11], v[12], v[13]}
end

local out = {}
local budget = limit + CLAIM_SCAN
while #out < limit and budget > 0 do
  local best, bm, bs
  for _, c in ipairs(cursors) do
    local m, s = head(c)
    if m and (not best or s < bs or (s == bs and m < bm)) then best, bm, bs = c, m, s end
  end
  if not best then break end
  budget = budget - 1
  best.pos = best.pos + 2
  local id = id_of(bm)
  local v, fields_ = verdict(best, bm, id)
  if v == "take" then
    out[#out + 1] = take(best, bm, id, fields_)
    best.offset = best.offset + 1
  elseif v == "skip" then
    best.offset = best.offset + 1
  end
end

for _, c in ipairs(cursors) do
  if #c.taken > 0 then bulk("ZREM", c.key, c.taken, 1) end
end
-- a full batch: more work may wait, so let another idle worker look too
if #out == limit then
  for _, c in ipairs(cursors) do
    if redis.call("ZCARD", c.key) > 0 then wake_channel(c.ch) end
  end
end
return out
