-- enqueue_workflow: enqueue.lua for jobs with workflow options (dependencies, a batch,
-- uniqueness windows; see _lib_workflow.lua), all or nothing: every check runs before the
-- first write. No hand-off: due jobs are queued and wake workers as usual.
-- Dependencies: an id that names no stored job (or a -k that names no earlier job of the
-- call) refuses the call. A job whose dependencies all completed is stored as its state
-- says; one with an unfinished dependency is stored waiting on it; one with a failed,
-- cancelled or deleted dependency is stored cancelled (events enqueued, cancelled) unless
-- its on_dependency_failure is "run" (then that dependency counts as satisfied).
-- Uniqueness windows: an idempotency key held by a job created at or before the cutoff
-- (now - unique_for), or whose state is not among the unique states, is taken from it
-- (its idempotency_key field deleted) and given to the new job.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = batch id|"" (store this batch with the jobs),
-- ARGV[4] = its total, ARGV[5] = its callback job (the 15 values of one job of
-- enqueue.lua, as a JSON list)|"", ARGV[6] = n, then n times: the 15 values of one job of
-- enqueue.lua, its dependencies (a counted list: id >= 1 a stored job, -k the k-th job of
-- this call), on_dependency_failure ("cancel"|"run"), batch id|"", unique cutoff|"",
-- unique states (a counted list, -1 = none given)
-- Returns: {"ok", id1, created1, id2, created2, ...} (created 0: an idempotency key
--   matched), or {"unknown", id, ...} (nothing stored), or {"batch_exists"} (nothing
--   stored)
local now = ARGV[2]
local bid = nz(ARGV[3])
local n = tonumber(ARGV[6])

-- pass 1 (reads only): each job's arguments, its dependencies checked, its idempotency key
local jobs, unknown, fresh, claimed_keys, i = {}, {}, 0, {}, 7
for k = 1, n do
  local p = {i = i}
  local ustates
  p.deps, i = read_list(ARGV, i + NEW_JOB_ARGS)
  p.run, p.batch, p.cutoff = ARGV[i] == "run", nz(ARGV[i + 1]), nz(ARGV[i + 2])
  ustates, i = read_list(ARGV, i + 3)
  for _, d in ipairs(p.deps) do
    local ref = tonumber(d)
    if ref < 0 then
      if -ref >= k then unknown[#unknown + 1] = d end
    elseif redis.call("EXISTS", K.job(d)) == 0 then
      unknown[#unknown + 1] = d
    end
  end
  local f, existing = idem_lookup(ARGV, p.i)
  if existing and (p.cutoff or ustates) then
    local e = redis.call("HMGET", K.job(existing), "created_at", "state")
    if (p.cutoff and tonumber(e[1]) <= tonumber(p.cutoff))
        or (ustates and not as_set(ustates)[e[2]]) then
      p.release, existing = existing, nil
    end
  end
  if existing then
    p.existing = existing
  elseif f and claimed_keys[f] then
    p.same_as = claimed_keys[f]
  else
    fresh = fresh + 1
    p.nth, p.field = fresh, f
    if f then claimed_keys[f] = k end
  end
  jobs[k] = p
end
if #unknown > 0 then return {"unknown", unpack(unknown)} end
if bid and redis.call("EXISTS", K.batch(bid)) == 1 then return {"batch_exists"} end

local first = 0
if fresh > 0 then first = redis.call("INCRBY", K.id, fresh) - fresh end
if bid then
  local h = {"total", ARGV[4], "completed", "0", "failed", "0", "cancelled", "0",
             "state", "running", "created_at", now}
  if nz(ARGV[5]) then
    h[#h + 1] = "callback"
    h[#h + 1] = ARGV[5]
  end
  redis.call("HSET", K.batch(bid), unpack(h))
end

-- one new job, after the earlier ones of the call (ids: their ids, for -k)
local function write(id, p, ids)
  local i = p.i
  local deps, seen, unfinished, failed = {}, {}, {}, nil
  for _, d in ipairs(p.deps) do
    local ref = tonumber(d)
    local dep = ref < 0 and ids[-ref] or d
    if not seen[dep] then
      seen[dep] = true
      deps[#deps + 1] = dep
      local st = redis.call("HGET", K.job(dep), "state")
      if st == "failed" or st == "cancelled" or not st then
        if not p.run then failed = failed or dep end
      elseif st ~= "completed" then
        unfinished[#unfinished + 1] = dep
      end
    end
  end
  if failed or #unfinished > 0 then ARGV[i + 2] = "waiting" end
  write_job(id, ARGV, i, now, p.field)
  local h = {}
  if #deps > 0 then
    h[#h + 1], h[#h + 2] = "has_deps", "1"
    redis.call("RPUSH", K.deps(id), unpack(deps))
  end
  if p.run then h[#h + 1], h[#h + 2] = "on_dep_fail", "run" end
  if p.batch then h[#h + 1], h[#h + 2] = "batch_id", p.batch end
  if not failed and #unfinished > 0 then
    h[#h + 1], h[#h + 2] = "dep_wait", int_str(#unfinished)
    for _, dep in ipairs(unfinished) do
      redis.call("SADD", K.dnts(dep), id)
      redis.call("HSET", K.job(dep), "has_dependents", "1")
    end
  end
  if #h > 0 then redis.call("HSET", K.job(id), unpack(h)) end
  if failed then
    local d = {channel = ARGV[i + 6], name = ARGV[i], tenant = nz(ARGV[i + 13]), attempts = "0"}
    cancel_dependent(id, d, now, failed)
    if p.batch then workflow_finished(id, "cancelled", now, nil, p.batch) end
  end
end

-- pass 2: write the new jobs in order, so that -k names a job written already
local out, ids = {"ok"}, {}
for k = 1, n do
  local p = jobs[k]
  local id, created = p.existing, 0
  if p.same_as then
    id = ids[p.same_as]
  elseif not id then
    id, created = int_str(first + p.nth), 1
    if p.release then redis.call("HDEL", K.job(p.release), "idempotency_key") end
    write(id, p, ids)
  end
  ids[k] = id
  out[#out + 1] = id
  out[#out + 1] = created
end
if bid then  -- a batch whose members all ended at once (or that has none)
  batch_settle(bid, now)
end
return out
