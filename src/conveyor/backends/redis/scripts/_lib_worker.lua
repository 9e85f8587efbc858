-- _lib_worker.lua: the library's last part (after _lib.lua, _lib_jobs.lua and
-- _lib_limits.lua, whose rules it follows): complete, claim, hand-off.

-- complete (complete.lua, complete_claim.lua) ------------------------------------------
-- A batch of fenced outcomes at a[i ..]: seconds a removed job's events are kept, n, then
-- n times OUTCOME_ARGS values: job id, token, new state, at, event type, run_at|"",
-- order_key(run_at)|"" (for a wait on a token: order_key(at), where the job is queued
-- if the token is no longer waitable), result (JSON)|"", error record (JSON)|"",
-- refund_attempt ("1"|"0"), remove ("1"|"0"), expired_before|"", event data (JSON)|"",
-- stall ("1"|"0": a rescue of a run whose worker died, stalls + 1), wait_token|"" (for
-- state waiting: the token it now waits on; "" for a sleep), yields to a cancel ("1"|"0":
-- Outcome.yields_to_cancel).
-- Each applies only if the job is still running under that lease token (and, for a
-- rescue, its lease expired at or before expired_before); otherwise it changes nothing.
-- A wait on a token that is no longer waitable (see token_waitable) queues the job at
-- `at` instead, with a `resumed` event ({"reason": "token"}) in place of `waiting`. A
-- job whose cancel was requested while it ran is cancelled instead when the outcome
-- yields to a cancel (a `cancelled` event, no data; its error still kept).
-- Returns 0 (not applied), 1 (applied as asked), 2 (stored as cancelled instead) or 3
-- (stored as a resumed requeue instead).
local OUTCOME_ARGS = 16

local function apply_outcome(a, i, keep, names)
  local id, token, state, at, event = a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4]
  local run_at, ord, result, err = nz(a[i + 5]), nz(a[i + 6]), nz(a[i + 7]), nz(a[i + 8])
  local refund, remove = a[i + 9] == "1", a[i + 10] == "1"
  local expired_before, data, stall = nz(a[i + 11]), nz(a[i + 12]), a[i + 13] == "1"
  local wait_token, yields = nz(a[i + 14]), a[i + 15] == "1"
  local j = fields(id, names)
  if j.state ~= "running" or j.lease_token ~= token then return 0 end
  if expired_before and not (j.lease_expires_at
      and tonumber(j.lease_expires_at) <= tonumber(expired_before)) then
    return 0
  end
  detach(id, j)
  local resumed = false  -- a wait on a token that was completed (or expired) meanwhile
  if wait_token and state == "waiting" and not token_waitable(wait_token, at) then
    state, event, data, run_at, wait_token = "queued", "resumed", '{"reason": "token"}', at, nil
    resumed = true
  end
  local cancelled = j.cancel_requested == "1" and yields
  if cancelled then
    state, event, data, run_at, wait_token = "cancelled", "cancelled", nil, nil, nil
  end
  local applied = cancelled and 2 or (resumed and 3 or 1)
  -- a final end resolves the job's dependents and counts it in its batch (_lib_workflow.lua)
  local flow = TERMINAL[state] and (j.has_dependents or j.batch_id)
  if remove then
    emit(id, event, j.name, j.tenant, j.attempts, at, data)
    keep_enqueued(id, j)
    if flow then workflow_finished(id, state, at, j.has_dependents, j.batch_id) end
    purge(id, j, keep)
    return applied
  end
  -- lease fields are blanked ("" = none) in the same HSET, saving an HDEL
  local h = {"state", state, "lease_token", "", "lease_expires_at", "", "worker_id", "",
             "cancel_requested", ""}
  if refund then
    h[#h + 1] = "attempts"; h[#h + 1] = (tonumber(j.attempts) or 1) - 1
  end
  if stall then
    h[#h + 1] = "stalls"; h[#h + 1] = (tonumber(j.stalls) or 0) + 1
  end
  if err then
    local errors = j.errors
    if errors and errors ~= "[]" and string.sub(errors, -1) == "]" then
      errors = string.sub(errors, 1, -2) .. "," .. err .. "]"
    else
      errors = "[" .. err .. "]"
    end
    h[#h + 1] = "errors"; h[#h + 1] = errors
  end
  if result then h[#h + 1] = "result"; h[#h + 1] = result end
  if run_at and not TERMINAL[state] then
    h[#h + 1] = "run_at"; h[#h + 1] = run_at
    j.run_at = run_at
    if state ~= "waiting" then  -- a waiting job gets its ord when it is resumed
      h[#h + 1] = "ord"; h[#h + 1] = ord
      j.ord = ord
    end
  end
  if TERMINAL[state] then
    h[#h + 1] = "finished_at"; h[#h + 1] = at
    if state == "completed" then h[#h + 1] = "progress"; h[#h + 1] = "100" end
  elseif state == "waiting" and wait_token then
    h[#h + 1] = "wait_token"; h[#h + 1] = wait_token
  elseif (state == "queued" or state == "scheduled") and not resumed then
    h[#h + 1] = "progress"; h[#h + 1] = "0"  -- it starts again from the top
  end
  redis.call("HSET", K.job(id), unpack(h))
  move_state(id, j.channel, "running", state)
  if TERMINAL[state] then
    zadd_later(K.done(state), at, id)
  elseif state == "queued" then
    place_queued(id, j.channel, j.priority, j.ord, j.group_key, j.run_at)
  elseif state == "scheduled" then
    zadd_later(K.due, j.run_at, id)
  elseif state == "waiting" then
    zadd_later(K.wait, run_at or "+inf", id)
  end
  emit(id, event, j.name, j.tenant, j.attempts, at, data)
  if flow then workflow_finished(id, state, at, j.has_dependents, j.batch_id) end
  return applied
end

-- Returns one code per outcome (apply_outcome's), in input order, and the index after
-- the batch.
local function complete_outcomes(a, i)
  local keep, n = a[i], tonumber(a[i + 1])
  local names = {"state", "lease_token", "lease_expires_at", "channel", "group_key", "ord",
                 "priority", "run_at", "name", "tenant", "attempts", "idempotency_key",
                 "errors", "stalls", "has_tokens", "has_deps", "has_dependents",
                 "batch_id", "batch_of", "cancel_requested"}
  local out = {}
  for k = 0, n - 1 do
    out[k + 1] = apply_outcome(a, i + 2 + k * OUTCOME_ARGS, keep, names)
  end
  return out, i + 2 + n * OUTCOME_ARGS
end

-- claim (claim.lua, complete_claim.lua) ------------------------------------------------
-- Take up to `limit` due queued jobs for one worker, in priority, run_at, id order,
-- across the allowed channels. Scheduled jobs are left to promote_due (the core promotes
-- them ahead of their run_at). Paused channels are skipped (nothing is claimed while
-- every channel is paused). Skipped jobs (not due yet, name filtered) stay where they
-- are; a busy group never blocks the scan (only a free group's first member sits in a
-- ready set). At most CLAIM_SCAN entries beyond the claimed ones are examined per call.
-- Arguments at a[i ..]: worker id, lease token, limit, now, order_key(now),
-- lease_expires_at, then three counted lists (count, then values; count -1 = no
-- filter): channels, include (names), exclude (names). `limited` (claim_limited, from
-- claim_limited.lua and complete_claim_limited.lua) takes over a claim with limits or
-- fairness, whose arguments follow (see read_limits in _lib_limits.lua).
-- Returns one array per claimed job: id, name, payload, attempts, max_attempts, channel,
-- priority, tenant, group_key, tags, options, run_at, created_at, remove_on_complete,
-- stalls, max_stalls.
local CLAIM_SCAN = 1000
local CLAIM_CHUNK = 64

-- The walk of the ready sets, for the claim `c` (claim_jobs' fields). `gate` (optional,
-- a limited claim's first pass, see _lib_limits.lua) judges each job the walk would
-- take: gate(channel, name, tenant, group) says whether it may be taken (and counts it
-- if so); the walk stops at the first job it may not take. The jobs taken leave their
-- lanes where their channel keeps lanes (lanes_leave). Returns the jobs taken, and
-- whether the walk stopped short of the whole ready sets (a gate stopped it, or it used
-- up its budget of CLAIM_SCAN entries before the batch was full).
local function walk_ready(c, gate)
  local limit, token, lease_exp, now, worker = c.limit, c.token, c.lease_exp, c.now, c.worker
  local inc, exc, read = c.inc, c.exc, c.read
  -- one cursor per channel; `offset` counts the examined entries still in the set
  -- (claimed entries are removed only at the end)
  local cursors, seen = {}, {}
  for _, ch in ipairs(c.channels) do
    if not c.paused[ch] and not seen[ch] then
      seen[ch] = true
      cursors[#cursors + 1] = {key = K.ready(ch), ch = ch, items = {}, pos = 1, offset = 0,
                               done = false, taken = {}}
    end
  end

  local function head(cur)
    if cur.pos > #cur.items then
      if cur.done then return nil end
      cur.items = redis.call("ZRANGE", cur.key, cur.offset, cur.offset + CLAIM_CHUNK - 1,
                             "WITHSCORES")
      cur.pos = 1
      if #cur.items < 2 * CLAIM_CHUNK then cur.done = true end
      if #cur.items == 0 then return nil end
    end
    return cur.items[cur.pos], tonumber(cur.items[cur.pos + 1])
  end

  -- "take" (with the job's fields), "skip" (stays in place) or "gone" (stale, removed)
  local function verdict(cur, m, id)
    if string.sub(m, 1, 16) > c.now_ord then return "skip" end
    local v = redis.call("HMGET", K.job(id), unpack(read))
    if v[1] ~= "queued" then
      redis.call("ZREM", cur.key, m)
      return "gone"
    end
    if inc and not inc[v[2]] then return "skip" end
    if exc and exc[v[2]] then return "skip" end
    local g = nz(v[3])
    if g and redis.call("HEXISTS", K.glock, g) == 1 then return "skip" end
    return "take", v
  end

  local left = {}  -- the lanes of the jobs taken (where their channel keeps lanes)
  local function take(cur, m, id, v)
    cur.taken[#cur.taken + 1] = m
    local g = nz(v[3])
    if lanes_on(cur.ch) then
      local lid = lane_id(cur.ch, v[2], nz(v[8]), g)
      local l = left[lid]
      if not l then
        l = {ch = cur.ch}
        left[lid] = l
      end
      l[#l + 1] = m
    end
    if g then
      redis.call("ZREM", K.gq(g), m)
      redis.call("HDEL", K.grep, g)
      redis.call("HSET", K.glock, g, id)
    end
    local attempts = (tonumber(v[5]) or 0) + 1
    redis.call("HSET", K.job(id), unpack(lease_fields({}, attempts, token, lease_exp, now,
                                                      worker)))
    zrem_later(K.queued_at(cur.ch), id)
    index_running(id, cur.ch, "queued", lease_exp)
    emit(id, "started", v[2], v[8], attempts, now, nil)
    return {id, v[2], v[4], attempts, v[6], cur.ch, v[7], nf(v[8]), nf(g), v[9], nf(v[10]),
            v[11], v[12], v[13], nz(v[14]) or "0", nz(v[15]) or "1"}
  end

  local out, stopped = {}, false
  local budget = limit + CLAIM_SCAN
  while #out < limit and budget > 0 do
    local best, bm, bs
    for _, cur in ipairs(cursors) do
      local m, s = head(cur)
      if m and (not best or s < bs or (s == bs and m < bm)) then best, bm, bs = cur, m, s end
    end
    if not best then break end
    budget = budget - 1
    local id = id_of(bm)
    local v, fields_ = verdict(best, bm, id)
    if v == "take" and gate and not gate(best.ch, fields_[2], nz(fields_[8]), nz(fields_[3])) then
      stopped = true
      break
    end
    best.pos = best.pos + 2
    if v == "take" then
      out[#out + 1] = take(best, bm, id, fields_)
      best.offset = best.offset + 1
    elseif v == "skip" then
      best.offset = best.offset + 1
    end
  end

  -- a walk that ran out of budget before the batch was full leaves the rest to the
  -- lanes too (skipped entries may hide allowed jobs behind them)
  if budget <= 0 and #out < limit then stopped = true end
  for _, cur in ipairs(cursors) do
    if #cur.taken > 0 then bulk("ZREM", cur.key, cur.taken, 1) end
  end
  lanes_leave(left)
  -- a full batch: more work may wait, so let another idle worker look too
  if #out == limit then
    for _, cur in ipairs(cursors) do
      if redis.call("ZCARD", cur.key) > 0 then wake_channel(cur.ch) end
    end
  end
  return out, stopped
end

local function claim_jobs(a, i, limited)
  local worker, token, limit = a[i], a[i + 1], tonumber(a[i + 2])
  local now, now_ord, lease_exp = a[i + 3], a[i + 4], a[i + 5]
  local channels, include, exclude
  channels, i = read_list(a, i + 6)
  include, i = read_list(a, i)
  exclude, i = read_list(a, i)
  if limit <= 0 then return {} end

  if redis.call("EXISTS", K.paused_all) == 1 then return {} end
  local paused = as_set(redis.call("SMEMBERS", K.paused))
  if not channels then channels = redis.call("SMEMBERS", K.channels) end
  local read = {"state", "name", "group_key", "payload", "attempts", "max_attempts",
                "priority", "tenant", "tags", "options", "run_at", "created_at",
                "remove_on_complete", "stalls", "max_stalls"}
  local c = {worker = worker, token = token, limit = limit, now = now, now_ord = now_ord,
             lease_exp = lease_exp, channels = channels, paused = paused,
             inc = include and as_set(include), exc = exclude and as_set(exclude),
             read = read}
  if limited then  -- limits or fairness (see _lib_limits.lua)
    read[16], read[17] = "ord", "channel"
    return limited(c, a, i, walk_ready)
  end
  return (walk_ready(c))
end

-- hand-off (enqueue.lua) -----------------------------------------------------------------
-- An idle worker registers a standing claim (see handoff.py): P waiters maps its waiter
-- id to JSON {t = lease token, w = worker id, n = limit, l = lease length (seconds),
-- x = expires at (the end of its wait), c / i / e = channels / include / exclude (absent:
-- no filter), ln / lc = the job names / channels its claim's limits or fairness cover
-- (absent: none)}, and blocks on its own P hand:<waiter id>. A job such a limit covers
-- is never handed over (a claim applies the limits). An enqueue gives a new due job
-- to a live waiter whose claim would take it right now: it matches the waiter's filters,
-- its channel is not paused (nor everything), its group (if any) neither runs nor has a
-- queued member, and nothing queued in its channel sorts before it (a claim would take
-- that first). The batch's due jobs are considered in claim order, each waiter up to its
-- limit. The job is then stored as running under the waiter's token and lease (as long
-- as its claim's, from the enqueue's `now`), exactly as claim_jobs' take() stores it, and
-- the waiter's rows are added to its key as one member: JSON [token, row, row, ...], row
-- = id, name, payload, attempts, max_attempts, channel, priority, tenant, group, tags,
-- options, run_at, created_at, remove_on_complete, stalls, max_stalls (null for none). A
-- registration is used up by its hand-off, so a waiter's key holds at most one member.
-- Expired registrations (their worker stopped waiting without saying so, or died) are
-- dropped on sight.
-- A hand-off key outlives its lease by this (real time), then Redis drops it: only a
-- waiter that died leaves one behind (its jobs are rescued like any expired lease).
local HAND_GRACE_MS = 60000

-- the live registrations (with free slots), or nil when none can take anything
local function load_waiters(now)
  local regs = redis.call("HGETALL", K.waiters)  -- as cheap as EXISTS when there are none
  if #regs == 0 then return nil end
  local t = tonumber(now)
  local ws = {left = 0, groups = {}}
  for k = 1, #regs, 2 do
    local ok, w = pcall(cjson.decode, regs[k + 1])
    if ok and type(w) == "table" and (tonumber(w.x) or -1) >= t and tonumber(w.n)
        and tonumber(w.l) and type(w.t) == "string" and type(w.w) == "string"
        and type(w.c or {}) == "table" and type(w.i or {}) == "table"
        and type(w.e or {}) == "table" and type(w.ln or {}) == "table"
        and type(w.lc or {}) == "table" then
      w.id, w.n, w.rows = regs[k], tonumber(w.n), {}
      w.lease_exp = string.format("%.17g", t + tonumber(w.l))
      w.chans = w.c and as_set(w.c)
      w.inc = w.i and as_set(w.i)
      w.exc = w.e and as_set(w.e)
      w.lnames = w.ln and as_set(w.ln)
      w.lchans = w.lc and as_set(w.lc)
      ws[#ws + 1] = w
      ws.left = ws.left + math.max(w.n, 0)
    else
      redis.call("HDEL", K.waiters, regs[k])
    end
  end
  if ws.left == 0 then return nil end
  ws.paused = {}
  if redis.call("EXISTS", K.paused_all, K.paused) > 0 then  -- usually nothing is paused
    if redis.call("EXISTS", K.paused_all) == 1 then return nil end
    ws.paused = as_set(redis.call("SMEMBERS", K.paused))
  end
  return ws
end

-- the waiter that takes the new job id (arguments at a[i], see write_job) and the job's
-- row number there (in the order of these calls), or nil
local function waiter_for(ws, id, a, i, now_ord)
  local name, ord, priority, channel, group = a[i], a[i + 4], a[i + 5], a[i + 6], nz(a[i + 12])
  if ord > now_ord or ws.paused[channel] then return nil end
  local w
  for _, c in ipairs(ws) do
    if c.n > 0 and (not c.chans or c.chans[channel]) and (not c.inc or c.inc[name])
        and not (c.exc and c.exc[name]) and not (c.lnames and c.lnames[name])
        and not (c.lchans and c.lchans[channel]) then
      w = c
      break
    end
  end
  if not w then return nil end
  if group and (ws.groups[group] or redis.call("HEXISTS", K.glock, group) == 1
                or redis.call("EXISTS", K.gq(group)) == 1) then
    return nil
  end
  local head = redis.call("ZRANGE", K.ready(channel), 0, 0, "WITHSCORES")
  if head[1] then
    local hp, p = tonumber(head[2]), tonumber(priority)
    if hp < p or (hp == p and head[1] < member_of(ord, id)) then return nil end
  end
  w.n = w.n - 1
  ws.left = ws.left - 1
  if group then  -- locked before any write, so no other member becomes claimable
    ws.groups[group] = true
    redis.call("HSET", K.glock, group, id)
  end
  w.rows[#w.rows + 1] = false  -- write_job fills it in
  return w, #w.rows
end

-- a waiting job that a completed token resumes (complete_token.lua), handed straight
-- to the waiter whose claim would take it now (waiter_for; nil: none): what
-- resume_waiting and then claim_jobs' take() would store, in one step (its `resumed`
-- event, then `started`). j: resume_waiting's fields. Returns whether it was handed.
local function resume_to_waiter(ws, id, j, now, ord, data)
  local a = {j.name, false, false, false, ord, j.priority, j.channel, false, false, false,
             false, false, j.group_key or ""}
  local w, slot = waiter_for(ws, id, a, 1, ord)
  if not w then return false end
  local v = redis.call("HMGET", K.job(id), "payload", "max_attempts", "tags", "options",
                       "created_at", "remove_on_complete", "stalls", "max_stalls")
  local attempts = (tonumber(j.attempts) or 0) + 1
  zrem_later(K.wait, id)
  redis.call("HSET", K.job(id), "run_at", now, "ord", ord, "wait_token", "",
             unpack(lease_fields({}, attempts, w.t, w.lease_exp, now, w.w)))
  index_running(id, j.channel, "waiting", w.lease_exp)
  emit(id, "resumed", j.name, j.tenant, j.attempts, now, data)
  emit(id, "started", j.name, j.tenant, attempts, now, nil)
  w.rows[slot] = {id, j.name, v[1], attempts, tonumber(v[2]), j.channel, tonumber(j.priority),
                  j.tenant or cjson.null, j.group_key or cjson.null, v[3],
                  nz(v[4]) or cjson.null, now, v[5], v[6] == "1", tonumber(v[7]) or 0,
                  tonumber(v[8]) or 1}
  return true
end

-- after the jobs are written: give each waiter its rows, using up its registration
local function hand_over(ws)
  for _, w in ipairs(ws) do
    if #w.rows > 0 then
      redis.call("HDEL", K.waiters, w.id)
      local key = K.hand(w.id)
      local item = {w.t}
      for r, row in ipairs(w.rows) do item[r + 1] = row end
      redis.call("ZADD", key, 0, cjson.encode(item))
      redis.call("PEXPIRE", key, math.ceil(tonumber(w.l) * 1000) + HAND_GRACE_MS)
    end
  end
end
