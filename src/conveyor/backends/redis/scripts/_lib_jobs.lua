-- _lib_jobs.lua: the library's second part (after _lib.lua, whose rules it follows):
-- enqueue, promote, cancel, job filters, durable waits.

-- enqueue ------------------------------------------------------------------------------
-- A NewJob is 15 ARGV values at a[i .. i+14]: name, payload, state, run_at, ord,
-- priority, channel, max_attempts, options|"", remove_on_complete, idempotency_key|"",
-- tags (JSON), group|"", tenant|"", max_stalls.
-- Job hash fields "stalls" (runs whose worker died) and "max_stalls" are written only
-- when they differ from their defaults, 0 and 1 (so jobs stored before them read right).
local NEW_JOB_ARGS = 15

-- the idempotency field of the job at a[i] (nil without a key), and the id of the
-- existing job that holds it (nil if none)
local function idem_lookup(a, i)
  local ikey = nz(a[i + 10])
  if not ikey then return nil, nil end
  local f = idem_field(nz(a[i + 13]), ikey)
  local existing = redis.call("HGET", K.idem, f)
  if existing and redis.call("EXISTS", K.job(existing)) == 1 then return f, existing end
  return f, nil
end

-- w: the waiter this due job is handed to (see hand-off below) as its row number `slot`,
-- or nil. The job's `enqueued` event goes to the stream; its own event list stores it
-- only for a remove_on_complete job (whose events outlive its hash): otherwise
-- get_events derives it from the hash (name, tenant, created_at), one write less.
local function write_job(id, a, i, now, ifield, w, slot)
  local name, payload, state, run_at, ord = a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4]
  local priority, channel, max_attempts = a[i + 5], a[i + 6], a[i + 7]
  local options, roc, ikey, tags = nz(a[i + 8]), a[i + 9], nz(a[i + 10]), a[i + 11]
  local group, tenant, max_stalls = nz(a[i + 12]), nz(a[i + 13]), a[i + 14]
  local h = {"id", id, "name", name, "payload", payload, "run_at", run_at,
             "ord", ord, "priority", priority, "channel", channel,
             "max_attempts", max_attempts, "progress", "0",
             "remove_on_complete", roc, "tags", tags, "created_at", now}
  if options then h[#h + 1] = "options"; h[#h + 1] = options end
  if ikey then h[#h + 1] = "idempotency_key"; h[#h + 1] = ikey end
  if group then h[#h + 1] = "group_key"; h[#h + 1] = group end
  if tenant then h[#h + 1] = "tenant"; h[#h + 1] = tenant end
  if max_stalls ~= "1" then h[#h + 1] = "max_stalls"; h[#h + 1] = max_stalls end
  if w then
    lease_fields(h, 1, w.t, w.lease_exp, now, w.w)
  else
    h[#h + 1] = "state"; h[#h + 1] = state
    h[#h + 1] = "attempts"; h[#h + 1] = "0"
  end
  redis.call("HSET", K.job(id), unpack(h))
  zadd_later(K.all, id, id)
  sadd_later(K.channels, channel)
  if ifield then redis.call("HSET", K.idem, ifield, id) end
  local stored = {}  -- the events kept in the job's own list
  local enqueued = event_text(id, "enqueued", name, tenant, "0", now, nil)  -- streamed
  if roc == "1" then stored[1] = enqueued end
  if w then
    -- handed over: exactly what claim_jobs' take() does (the group was locked already)
    index_running(id, channel, nil, w.lease_exp)
    stored[#stored + 1] = event_text(id, "started", name, tenant, 1, now, nil)
    w.rows[slot] = {id, name, payload, 1, tonumber(max_attempts), channel,
                    tonumber(priority), tenant or cjson.null, group or cjson.null, tags,
                    options or cjson.null, run_at, now, roc == "1", 0,
                    tonumber(max_stalls)}
  else
    move_state(id, channel, nil, state)
    if state == "queued" then
      place_queued(id, channel, priority, ord, group, run_at)
    elseif state == "scheduled" then
      zadd_later(K.due, run_at, id)
    end  -- "waiting" (on dependencies, enqueue_workflow.lua): in no structure but its index
  end
  if #stored > 0 then push_events(id, unpack(stored)) end
end

-- one job (cron_fire); returns id, created (1/0)
local function enqueue_one(a, i, now)
  local ifield, existing = idem_lookup(a, i)
  if existing then return existing, 0 end
  local id = int_str(redis.call("INCR", K.id))
  write_job(id, a, i, now, ifield)
  return id, 1
end

-- scheduled -> queued; returns the job's fields, or nil if it was not scheduled
local function promote(id)
  zrem_later(K.due, id)
  local j = fields(id, CORE)
  if j.state ~= "scheduled" then return nil end
  redis.call("HSET", K.job(id), "state", "queued")
  move_state(id, j.channel, "scheduled", "queued")
  place_queued(id, j.channel, j.priority, j.ord, j.group_key, j.run_at)
  return j
end

-- upcoming -> cancelled (a waiting job stops waiting on its token)
local function cancel_upcoming(id, j, now)
  detach(id, j)
  move_state(id, j.channel, j.state, "cancelled")
  if j.state == "waiting" then  -- stops waiting on its token, or on its dependencies
    redis.call("HSET", K.job(id), "state", "cancelled", "finished_at", now, "wait_token", "",
               "dep_wait", "")
  else
    redis.call("HSET", K.job(id), "state", "cancelled", "finished_at", now)
  end
  zadd_later(K.done("cancelled"), now, id)
  emit(id, "cancelled", j.name, j.tenant, j.attempts, now, nil)
end

-- job filters (list_jobs, cancel_jobs): name, channel, tenant, name prefix, tag mode,
-- counted tags; a prefix is compared byte for byte (literally: no pattern, and a UTF-8
-- prefix of a name is a prefix of its bytes)
local function read_filter(a, i)
  local f = {name = nz(a[i]), channel = nz(a[i + 1]), tenant = nz(a[i + 2]),
             prefix = nz(a[i + 3]), mode = a[i + 4]}
  f.tags, i = read_list(a, i + 5)
  return f, i
end

local function tags_match(tags_json, mode, want)
  if not want then return true end
  local have, n = {}, 0
  local ok, list = pcall(cjson.decode, tags_json or "[]")
  if ok and type(list) == "table" then
    for _, t in ipairs(list) do
      if not have[t] then have[t] = true; n = n + 1 end
    end
  end
  local seen, wanted, hits = {}, 0, 0
  for _, t in ipairs(want) do
    if not seen[t] then
      seen[t] = true
      wanted = wanted + 1
      if have[t] then hits = hits + 1 end
    end
  end
  if mode == "all" then return hits == wanted end
  if mode == "exact" then return hits == wanted and n == wanted end
  if mode == "none" then return hits == 0 end
  return hits > 0
end

local FILTER_FIELDS = {"state", "name", "channel", "tenant", "tags"}

local function matches(j, f)
  if f.name and j.name ~= f.name then return false end
  if f.channel and j.channel ~= f.channel then return false end
  if f.tenant and j.tenant ~= f.tenant then return false end
  if f.prefix and string.sub(j.name or "", 1, #f.prefix) ~= f.prefix then return false end
  return tags_match(j.tags, f.mode, f.tags)
end

-- did anything in this call make work available (a job queued, a group freed)?
local function woke_any()
  return next(WAKE) ~= nil
end

-- durable waits ---------------------------------------------------------------------------
-- Waiting jobs sit only in P wait (score run_at), never in a ready set. Three scripts take
-- one out, each checking the job is still waiting, so each resume happens once:
-- resume_due.lua (its run_at came), complete_token.lua (the token it waits on), and a
-- suspend whose token is no longer waitable (apply_outcome). The suspend and
-- complete_token are scripts, so they never interleave: a token completed while its job
-- still runs is seen by the suspend, which then queues the job at once.

-- is token `tid` still waitable at `at` (pending, expires_at unset or after `at`)? A
-- pending one past its expiry is marked expired on the way.
local function token_waitable(tid, at)
  local key = K.token(tid)
  local t = redis.call("HMGET", key, "state", "expires_at")
  if t[1] ~= "pending" then return false end
  local exp = nz(t[2])
  if exp and tonumber(exp) <= tonumber(at) then
    redis.call("HSET", key, "state", "expired")
    return false
  end
  return true
end

-- waiting -> queued at `now` (ord = order_key(now)), wait_token cleared, a `resumed` event
-- with `data`; j needs channel, group_key, priority, name, tenant, attempts
local function resume_waiting(id, j, now, ord, data)
  zrem_later(K.wait, id)
  redis.call("HSET", K.job(id), "state", "queued", "run_at", now, "ord", ord, "wait_token", "")
  move_state(id, j.channel, "waiting", "queued")
  place_queued(id, j.channel, j.priority, ord, j.group_key, now)
  emit(id, "resumed", j.name, j.tenant, j.attempts, now, data)
end

-- the fields resume_waiting needs, and the state and token a resume checks
local WAITING_FIELDS = {"state", "wait_token", "channel", "group_key", "priority", "name",
                        "tenant", "attempts"}
