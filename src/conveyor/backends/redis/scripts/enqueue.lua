-- enqueue: store a batch of jobs, all or nothing (the core validated every field, and
-- nothing below can fail half-way, so a batch is never half-applied). Idempotency keys
-- (scoped by tenant) hand back the existing job's id, also within one batch. Due jobs
-- that an idle worker's standing claim would take are stored as claimed by it and handed
-- over (see the hand-off in _lib_worker.lua); the others are queued and wake workers as usual.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = order_key(now), ARGV[4] = n (number of jobs),
--   then n times 15 values:
--   name, payload (JSON), state ("queued"|"scheduled"), run_at, order_key(run_at),
--   priority, channel, max_attempts, options (JSON|""), remove_on_complete ("1"|"0"),
--   idempotency_key|"", tags (JSON list), group|"", tenant|"", max_stalls
-- Returns: id1, created1, id2, created2, ... (created 0: an idempotency key matched)
local now = ARGV[2]
local n = tonumber(ARGV[4])

-- pass 1: which jobs are new (ids are then taken with one INCRBY)
local plan, fresh, claimed_keys, due = {}, 0, {}, {}
for k = 1, n do
  local i = 5 + (k - 1) * NEW_JOB_ARGS
  local f, existing = idem_lookup(ARGV, i)
  if existing then
    plan[k] = {existing = existing}
  elseif f and claimed_keys[f] then
    plan[k] = {same_as = claimed_keys[f]}
  else
    fresh = fresh + 1
    plan[k] = {i = i, field = f, nth = fresh}
    if f then claimed_keys[f] = k end
    if ARGV[i + 2] == "queued" then due[#due + 1] = plan[k] end
  end
end

local first = 0
if fresh > 0 then first = redis.call("INCRBY", K.id, fresh) - fresh end

-- hand-off: only when a worker registered a standing claim (one HGETALL of an absent key
-- otherwise); the due jobs are offered in claim order (priority, run_at, id)
local waiters = #due > 0 and load_waiters(now)
if waiters then
  if #due > 1 then
    table.sort(due, function(x, y)
      local px, py = tonumber(ARGV[x.i + 5]), tonumber(ARGV[y.i + 5])
      if px ~= py then return px < py end
      local ox, oy = ARGV[x.i + 4], ARGV[y.i + 4]
      if ox ~= oy then return ox < oy end
      return x.nth < y.nth
    end)
  end
  for _, p in ipairs(due) do
    if waiters.left == 0 then break end
    p.w, p.slot = waiter_for(waiters, int_str(first + p.nth), ARGV, p.i, ARGV[3])
  end
end

-- pass 2: write the new jobs
local out = {}
for k = 1, n do
  local p = plan[k]
  if p.existing then
    out[#out + 1] = p.existing
    out[#out + 1] = 0
  elseif p.same_as then
    out[#out + 1] = out[2 * p.same_as - 1]
    out[#out + 1] = 0
  else
    local id = int_str(first + p.nth)
    write_job(id, ARGV, p.i, now, p.field, p.w, p.slot)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if waiters then hand_over(waiters) end
return out
