-- _lib_limits.lua: the library's third part (after _lib.lua and _lib_jobs.lua, whose rules
-- it follows; _lib_worker.lua's claim_jobs calls it): a claim with limits or fairness.
--
-- Unless a claimed channel is fair or a name's group rule is replaced by a limit, such a
-- claim first walks the ready sets as a plain claim does, each job judged by the limits
-- (walk_ready's gate), and goes on through the lanes (below) only from the first job a
-- limit holds back: limits that hold nothing back cost their counts and the jobs'
-- removal from their lanes (which every claim does), not a walk of the lanes.
--
-- Through lanes, a claim walks lanes instead of ready sets (see "lanes" in _lib.lua):
-- every job of a lane has the same channel, name, tenant and group, so a limit that holds
-- back its first member holds back the whole lane, which is then skipped in one step,
-- however long its backlog. The walk merges the lane heads of the claimed channels (P lh:<channel>, in
-- claim order) with the lanes already entered; a lane is followed member by member only
-- while its members are taken (or not due yet). Lanes are kept for a channel while such
-- claims use it: the first one (P lon:<channel> absent) builds them from the channel's
-- queued jobs; each refreshes P lon:<channel>'s TTL; prune drops them once it lapsed.
--
-- Limits (ClaimLimit in records.py), counted per key value (lp(group), lp(tenant), or ""):
-- * concurrency: the running jobs in the store, read once per claim (the channel's
--   "running" count for a channel-wide limit; else each running job's hash, from P
--   leases), plus the jobs this claim takes;
-- * rate: P rs:<rate key> holds the starts per span of ClaimLimit.span seconds (field:
--   the span's number floor(now / span); value: "<count>:<latest start>"). A span counts
--   in full while its latest start is later than now - per; one whose latest start is
--   over a second older (clock slack) is deleted when the key is read. A claim adds its
--   starts (all at its now) to one span per key value, in one HSET. The rate key
--   includes `per`, so two windows on one scope never prune each other's spans.
-- A name-scoped concurrency limit keyed by group replaces the one-running-per-group rule
-- for that name (its count decides); other group jobs still need their group idle (no
-- member running, none taken by this claim) and to be its first queued member.
-- Fairness: the claim runs in rounds; in each, a fair channel's tenant (or group) value
-- gives at most one job, so the result is ordered by (round, priority, run_at, id).

local LIMITED_SCAN = 5000       -- entries examined beyond the claimed ones
local LANES_TTL_MS = 21600000   -- lanes outlive the last claim that used them by 6 hours
local LANE_CHUNK = 64
local LIMIT_ARGS = 6

-- limits at a[i]: count, then per limit: scope, target, key|"", n, per|"", span|""; then
-- fairness:
-- count, then per pair: channel, column. nil when there is neither.
local function read_limits(a, i)
  local nl = tonumber(a[i]) or 0
  local f = i + 1 + nl * LIMIT_ARGS
  local nfair = tonumber(a[f]) or 0
  if nl == 0 and nfair == 0 then return nil end
  local limits = {}
  for k = 0, nl - 1 do
    local j = i + 1 + k * LIMIT_ARGS
    limits[k + 1] = {scope = a[j], target = a[j + 1], key = nz(a[j + 2]),
                     n = tonumber(a[j + 3]), per = nz(a[j + 4]), span = tonumber(a[j + 5]),
                     count = {}, taken = {}, rkeys = {}, spans = {}}
  end
  local fair = {}
  for k = 0, nfair - 1 do fair[a[f + 1 + 2 * k]] = a[f + 2 + 2 * k] end
  return {limits = limits, fair = fair}
end

-- build a channel's lanes from its queued jobs (those this call queued included)
local function lanes_build(ch)
  lanes_drop(ch)
  redis.call("SADD", K.lchans, ch)
  local ids = redis.call("ZRANGE", K.queued_at(ch), 0, -1)
  local pending = LATER_Z[K.queued_at(ch)]
  if pending then
    local known = as_set(ids)
    for id, score in pairs(pending) do
      if score and not known[id] then ids[#ids + 1] = id end
    end
  end
  local lanes, order = {}, {}
  for _, id in ipairs(ids) do
    local v = redis.call("HMGET", K.job(id), "state", "channel", "name", "tenant", "group_key",
                         "priority", "ord")
    if v[1] == "queued" and v[2] == ch then
      local lid = lane_id(ch, nz(v[3]), nz(v[4]), nz(v[5]))
      local l = lanes[lid]
      if not l then
        l = {items = {}}
        lanes[lid] = l
        order[#order + 1] = lid
      end
      local m, p = member_of(v[7], id), tonumber(v[6])
      l.items[#l.items + 1] = v[6]
      l.items[#l.items + 1] = m
      if not l.m or p < l.p or (p == l.p and m < l.m) then l.p, l.m, l.s = p, m, v[6] end
    end
  end
  for _, lid in ipairs(order) do
    local l = lanes[lid]
    bulk("ZADD", K.lane(lid), l.items, 2)
    redis.call("ZADD", K.lheads(ch), l.s, l.m .. lid)
  end
  if #order > 0 then bulk("SADD", K.lreg(ch), order, 1) end
end

local function lanes_use(ch)
  if redis.call("EXISTS", K.lon(ch)) == 0 then lanes_build(ch) end
  redis.call("SET", K.lon(ch), "1", "PX", LANES_TTL_MS)
  LANES[ch] = true
end

-- every running job: name, channel, tenant, group
local function running_jobs()
  local ids = redis.call("ZRANGE", K.leases, 0, -1)
  local pending = LATER_Z[K.leases]
  if pending then
    local known = as_set(ids)
    for id, score in pairs(pending) do
      if score and not known[id] then ids[#ids + 1] = id end
    end
  end
  local out = {}
  for _, id in ipairs(ids) do
    local v = redis.call("HMGET", K.job(id), "state", "name", "channel", "tenant", "group_key")
    if v[1] == "running" then
      out[#out + 1] = {name = v[2], channel = v[3], tenant = nz(v[4]), group = nz(v[5])}
    end
  end
  return out
end

local function applies(L, name, channel)
  if L.scope == "name" then return L.target == name end
  return L.scope == "channel" and L.target == channel
end

local function key_value(L, tenant, group)
  if L.key == "group" then return lp(group) end
  if L.key == "tenant" then return lp(tenant) end
  return ""
end

-- the running jobs (concurrency) or the starts in the window (rate) of L's key value kv
local function current(L, kv, now)
  local c = L.count[kv]
  if c then return c end
  if not L.per then return 0 end
  local key = K.rspans(lp(L.scope) .. lp(L.target) .. lp(L.key) .. kv .. lp(L.per))
  local t = tonumber(now)
  local lo, stale = t - tonumber(L.per), t - tonumber(L.per) - 1
  local here = string.format("%.0f", math.floor(t / L.span))
  local spans, old = redis.call("HGETALL", key), {}
  c = 0
  local mine, mine_at = 0, nil  -- the starts already in this claim's span, their latest
  -- a span's number tells where its starts are, [s, s + w): only a span that straddles
  -- now - per needs its latest start read (eps: the float error of s)
  local w = L.span
  local eps = w * 1e-6
  for k = 1, #spans, 2 do
    local f = spans[k]
    local s = tonumber(f) * w
    if s + w + eps <= stale then
      old[#old + 1] = f  -- every start over a second older than the window
    elseif s + w + eps > lo then  -- (else: older than the window, within its slack)
      local n, latest
      if s - eps > lo and f ~= here then
        n = tonumber(string.match(spans[k + 1], "^%d+"))
      else
        n, latest = string.match(spans[k + 1], "^(%d+):(.+)$")
        n = tonumber(n)
        if tonumber(latest) <= lo then n = 0 end
      end
      c = c + n
      if f == here then mine, mine_at = n, latest end
    end
  end
  if #old > 0 then bulk("HDEL", key, old, 1) end
  L.count[kv], L.rkeys[kv], L.spans[kv] = c, key, {here, mine, mine_at}
  return c
end

-- load the concurrency counts; the names whose group rule a limit replaces
local function count_running(limits)
  local scan, gm = false, {}
  for _, L in ipairs(limits) do
    if not L.per then
      if L.scope == "channel" and not L.key then
        L.wide = true
        local pending = COUNTS[L.target]
        L.count[""] = (tonumber(redis.call("HGET", K.counts(L.target), "running")) or 0)
                      + (pending and pending.running or 0)
      else
        scan = true
        if L.scope == "name" and L.key == "group" then gm[L.target] = true end
      end
    end
  end
  if scan then
    for _, r in ipairs(running_jobs()) do
      for _, L in ipairs(limits) do
        if not L.per and not L.wide and applies(L, r.name, r.channel) then
          local kv = key_value(L, r.tenant, r.group)
          L.count[kv] = (L.count[kv] or 0) + 1
        end
      end
    end
  end
  return gm
end

-- does every limit over this job leave room?
local function within_limits(limits, ch, name, tenant, group, now)
  for _, L in ipairs(limits) do
    if applies(L, name, ch) then
      local kv = key_value(L, tenant, group)
      if current(L, kv, now) + (L.taken[kv] or 0) >= L.n then return false end
    end
  end
  return true
end

-- a start under each limit over this job (a rate's span gets it at the end of the claim)
local function count_start(limits, ch, name, tenant, group)
  for _, L in ipairs(limits) do
    if applies(L, name, ch) then
      local kv = key_value(L, tenant, group)
      L.taken[kv] = (L.taken[kv] or 0) + 1
    end
  end
end

-- the claim's starts into the span holding its now, per rate limit and key value (its
-- latest start never moves back: a claimer whose clock is behind adds to the count
-- only); the span log outlives its window by a minute
local function record_starts(limits, now)
  for _, L in ipairs(limits) do
    if L.per then
      local ttl = math.ceil(tonumber(L.per) * 1000) + 60000
      for kv, n in pairs(L.taken) do
        local key, span = L.rkeys[kv], L.spans[kv]
        local latest = now
        if span[3] and tonumber(span[3]) > tonumber(now) then latest = span[3] end
        redis.call("HSET", key, span[1], (span[2] + n) .. ":" .. latest)
        redis.call("PEXPIRE", key, ttl)
      end
    end
  end
end

-- A cursor reads its sorted set in chunks that start small and double up to LANE_CHUNK:
-- a claim reads most lanes for a member or two (a limit holds back the rest, or the
-- batch is full), so a lane entered costs a few entries, not LANE_CHUNK of them.
local function peek(cur)
  if cur.pos > #cur.items then
    if cur.done then return nil end
    local chunk = cur.chunk or LANE_CHUNK
    cur.items = redis.call("ZRANGE", cur.key, cur.offset, cur.offset + chunk - 1,
                           "WITHSCORES")
    cur.pos = 1
    if #cur.items < 2 * chunk then cur.done = true end
    cur.chunk = math.min(chunk * 2, LANE_CHUNK)
    if #cur.items == 0 then return nil end
  end
  return cur.items[cur.pos], tonumber(cur.items[cur.pos + 1])
end

-- nothing the walk reads is written before it ends, so offsets only grow
local function advance(cur)
  cur.pos = cur.pos + 2
  cur.offset = cur.offset + 1
end

-- a binary heap of lane cursors, least first by their current member (hs: score, then
-- hm: member): a claim's walk picks its next candidate among the lanes it entered in
-- O(log lanes), not by looking at each of them
local function ahead(a, b)
  return a.hs < b.hs or (a.hs == b.hs and a.hm < b.hm)
end

local function heap_push(h, x)
  local i = #h + 1
  h[i] = x
  while i > 1 do
    local up = math.floor(i / 2)
    if not ahead(h[i], h[up]) then break end
    h[i], h[up] = h[up], h[i]
    i = up
  end
end

local function heap_pop(h)
  local top, n = h[1], #h
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, least = 2 * i, i
    if l <= n and ahead(h[l], h[least]) then least = l end
    if l + 1 <= n and ahead(h[l + 1], h[least]) then least = l + 1 end
    if least == i then break end
    h[i], h[least] = h[least], h[i]
    i = least
  end
  return top
end

-- a walked lane's first member once the claim's removals are done, as a lane head
-- (member .. lane id) and its score; nil for an empty lane. Every member before the
-- cursor went (taken or gone) unless one was passed over, so the cursor's next member
-- is the first one when it has read it.
local function first_left(lc)
  local m, sc
  if not lc.passed and lc.pos <= #lc.items then
    m, sc = lc.items[lc.pos], lc.items[lc.pos + 1]
  elseif not lc.passed and lc.done then
    return nil
  else
    local first = redis.call("ZRANGE", lc.key, 0, 0, "WITHSCORES")
    m, sc = first[1], first[2]
  end
  if m then return m .. lc.lid, sc end
  return nil
end

-- c: worker, token, limit, now, now_ord, lease_exp, channels, paused, inc, exc, read (the
-- job fields claim_jobs reads, then ord and channel); the limits at a[i] (read_limits)
local function claim_limited(c, a, i, walk_ready)
  local lim = read_limits(a, i) or {limits = {}, fair = {}}
  local limits, fair, now = lim.limits, lim.fair, c.now
  local gm = count_running(limits)
  local heads, seen = {}, {}
  for _, ch in ipairs(c.channels) do
    if not c.paused[ch] and not seen[ch] then
      seen[ch] = true
      lanes_use(ch)
      heads[#heads + 1] = {key = K.lheads(ch), ch = ch, items = {}, pos = 1, offset = 0,
                           done = false}
    end
  end
  local out = {}
  if next(fair) == nil and next(gm) == nil then
    -- the ready sets first, in claim order, until a limit holds a job back (the jobs
    -- taken leave their lanes as they do in a plain claim)
    local stopped
    out, stopped = walk_ready(c, function(ch, name, tenant, group)
      if not within_limits(limits, ch, name, tenant, group, now) then return false end
      count_start(limits, ch, name, tenant, group)
      return true
    end)
    if not stopped then
      record_starts(limits, now)
      return out
    end
  end
  local all_heads = heads
  local lanes, entered = {}, {}  -- lane id -> its cursor; cursors in order of entry
  local took_group, round_taken, took_fair = {}, {}, false
  local ready_rm = {}
  local budget = c.limit + LIMITED_SCAN

  local function judge(lc, m, s, id)
    if string.sub(m, 1, 16) > c.now_ord then return "next" end
    local v = redis.call("HMGET", K.job(id), unpack(c.read))
    if v[1] ~= "queued" or v[17] ~= lc.ch or member_of(v[16] or "", id) ~= m
        or tonumber(v[7]) ~= s then
      return "gone"
    end
    local name, tenant, group = v[2], nz(v[8]), nz(v[3])
    if (c.inc and not c.inc[name]) or (c.exc and c.exc[name]) then return "block" end
    local col = fair[lc.ch]
    if col then
      lc.value = col == "group" and lp(group) or lp(tenant)
      if round_taken[lc.ch .. "\0" .. lc.value] then return "pause" end
    end
    if group and not gm[name] then
      if took_group[group] or redis.call("HEXISTS", K.glock, group) == 1 then return "block" end
      if redis.call("ZRANGE", K.gq(group), 0, 0)[1] ~= m then return "block" end
    end
    if not within_limits(limits, lc.ch, name, tenant, group, now) then return "block" end
    return "take", v
  end

  local function take(lc, m, id, v)
    local ch, g, tenant = lc.ch, nz(v[3]), nz(v[8])
    lc.remove[#lc.remove + 1] = m
    if g then
      redis.call("ZREM", K.gq(g), m)
      local rep = redis.call("HGET", K.grep, g)
      if rep then  -- the group runs now: no member of it stays claimable elsewhere
        local rch = rep == m and ch or redis.call("HGET", K.job(id_of(rep)), "channel")
        if rch then redis.call("ZREM", K.ready(rch), rep) end
        redis.call("HDEL", K.grep, g)
      end
      local holder = redis.call("HGET", K.glock, g)
      redis.call("HSET", K.glock, g, holder and (holder .. "," .. id) or id)
      took_group[g] = true
    else
      local list = ready_rm[ch]
      if not list then list = {}; ready_rm[ch] = list end
      list[#list + 1] = m
    end
    local attempts = (tonumber(v[5]) or 0) + 1
    count_start(limits, ch, v[2], tenant, g)
    redis.call("HSET", K.job(id), unpack(lease_fields({}, attempts, c.token, c.lease_exp, now,
                                                      c.worker)))
    zrem_later(K.queued_at(ch), id)
    index_running(id, ch, "queued", c.lease_exp)
    emit(id, "started", v[2], v[8], attempts, now, nil)
    return {id, v[2], v[4], attempts, v[6], ch, v[7], nf(tenant), nf(g), v[9], nf(v[10]),
            v[11], v[12], v[13], nz(v[14]) or "0", nz(v[15]) or "1"}
  end

  -- a heads cursor's first lane not entered yet: its head, score and member (split once
  -- per head, not once per turn of the walk)
  local function peek_head(h)
    if h.at ~= h.offset then
      local hm, s = peek(h)
      while hm and lanes[string.sub(hm, 33)] do
        advance(h)
        hm, s = peek(h)
      end
      h.at, h.hm, h.hs, h.m = h.offset, hm, s, hm and string.sub(hm, 1, 32)
    end
    return h.hm, h.hs, h.m
  end

  -- the entered lanes in play, by their current member
  local active = {}
  local function play(lc)
    local m, sc = peek(lc)
    if m then
      lc.hm, lc.hs, lc.state = m, sc, "active"
      heap_push(active, lc)
    end
  end

  local function walk()
    while #out < c.limit and budget > 0 do
      -- the first candidate in claim order: a lane head not met yet, or the current
      -- member of an entered lane
      local best, bm, bs, bhead
      for _, h in ipairs(heads) do
        local hm, s, m = peek_head(h)
        if hm and (not best or s < bs or (s == bs and m < bm)) then
          best, bm, bs, bhead = h, m, s, hm
        end
      end
      local top = active[1]
      if top and (not best or top.hs < bs or (top.hs == bs and top.hm < bm)) then
        best, bm, bs, bhead = top, top.hm, top.hs, nil
      end
      if not best then break end
      budget = budget - 1
      if bhead then  -- enter the lane at its first member (the next turn takes it up)
        advance(best)
        local lid = string.sub(bhead, 33)
        local lc = {key = K.lane(lid), lid = lid, ch = best.ch, head = bhead,
                    items = {bm, tostring(bs)}, pos = 1, offset = 0, done = false,
                    chunk = 4, remove = {}}
        lanes[lid] = lc
        entered[#entered + 1] = lc
        play(lc)
      else
        local lc, id = heap_pop(active), id_of(bm)
        local verdict, v = judge(lc, bm, bs, id)
        if verdict == "take" then
          out[#out + 1] = take(lc, bm, id, v)
          advance(lc)
          if lc.value then
            round_taken[lc.ch .. "\0" .. lc.value] = true
            took_fair = true
            lc.state = "paused"
          else
            play(lc)
          end
        elseif verdict == "next" then
          lc.passed = true
          advance(lc)
          play(lc)
        elseif verdict == "gone" then
          lc.remove[#lc.remove + 1] = bm
          advance(lc)
          play(lc)
        elseif verdict == "pause" then
          lc.state = "paused"
        else
          lc.state = "blocked"
        end
      end
    end
  end

  walk()
  -- further rounds of the fair channels (every lane was met by the first one)
  while #out < c.limit and budget > 0 and took_fair do
    heads, round_taken, took_fair = {}, {}, false
    for _, lc in ipairs(entered) do
      if lc.state == "paused" then play(lc) end
    end
    walk()
  end

  -- the lanes' members taken or gone, and their new first members, per channel
  local moved = {}
  for _, lc in ipairs(entered) do
    if #lc.remove > 0 then
      bulk("ZREM", lc.key, lc.remove, 1)
      local m, sc = first_left(lc)
      if m ~= lc.head then head_moved(moved, lc.ch, lc.head, sc, m, lc.lid) end
    end
  end
  heads_write(moved)
  for ch, members in pairs(ready_rm) do bulk("ZREM", K.ready(ch), members, 1) end
  record_starts(limits, now)
  if #out == c.limit then  -- a full batch: more work may wait, let another worker look
    for _, h in ipairs(all_heads) do
      if redis.call("ZCARD", h.key) > 0 then wake_channel(h.ch) end
    end
  end
  return out
end
