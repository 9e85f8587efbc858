-- enqueue: store a batch of jobs, all or nothing (the core validated every field, and
-- nothing below can fail half-way, so a batch is never half-applied). Idempotency keys
-- (scoped by tenant) hand back the existing job's id, also within one batch.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = n (number of jobs), then n times 14 values:
--   name, payload (JSON), state ("queued"|"scheduled"), run_at, order_key(run_at),
--   priority, channel, max_attempts, options (JSON|""), remove_on_complete ("1"|"0"),
--   idempotency_key|"", tags (JSON list), group|"", tenant|""
-- Returns: id1, created1, id2, created2, ... (created 0: an idempotency key matched)
local now = ARGV[2]
local n = tonumber(ARGV[3])

-- pass 1: which jobs are new (ids are then taken with one INCRBY)
local plan, fresh, claimed_keys = {}, 0, {}
for k = 1, n do
  local i = 4 + (k - 1) * NEW_JOB_ARGS
  local f, existing = idem_lookup(ARGV, i)
  if existing then
    plan[k] = {existing = existing}
  elseif f and claimed_keys[f] then
    plan[k] = {same_as = claimed_keys[f]}
  else
    fresh = fresh + 1
    plan[k] = {i = i, field = f, nth = fresh}
    if f then claimed_keys[f] = k end
  end
end

local first = 0
if fresh > 0 then first = redis.call("INCRBY", K.id, fresh) - fresh end

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
    write_job(id, ARGV, p.i, now, p.field)
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
return out
