-- complete: apply a batch of fenced outcomes decided by the core. Each applies only if
-- the job is still running under that lease token (and, for a rescue, its lease
-- expired at or before expired_before); otherwise it changes nothing.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = seconds a removed job's events are kept (its retention),
-- ARGV[3] = n, then n times 13 values:
--   job id, token, new state, at, event type, run_at|"", order_key(run_at)|"",
--   result (JSON)|"", error record (JSON)|"", refund_attempt ("1"|"0"),
--   remove ("1"|"0"), expired_before|"", event data (JSON)|""
-- Returns: one 1 (applied) or 0 per outcome, in input order.
local FIELDS = {"state", "lease_token", "lease_expires_at", "channel", "group_key", "ord",
                "priority", "run_at", "name", "tenant", "attempts", "idempotency_key",
                "errors"}

local function apply(a, i)
  local id, token, state, at, event = a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4]
  local run_at, ord, result, err = nz(a[i + 5]), nz(a[i + 6]), nz(a[i + 7]), nz(a[i + 8])
  local refund, remove = a[i + 9] == "1", a[i + 10] == "1"
  local expired_before, data = nz(a[i + 11]), nz(a[i + 12])
  local j = fields(id, FIELDS)
  if j.state ~= "running" or j.lease_token ~= token then return 0 end
  if expired_before and not (j.lease_expires_at
      and tonumber(j.lease_expires_at) <= tonumber(expired_before)) then
    return 0
  end
  detach(id, j)
  if remove then
    emit(id, event, j.name, j.tenant, j.attempts, at, data)
    purge(id, j, a[2])
    return 1
  end
  -- lease fields are blanked ("" = none) in the same HSET, saving an HDEL
  local h = {"state", state, "lease_token", "", "lease_expires_at", "", "worker_id", "",
             "cancel_requested", ""}
  if refund then
    h[#h + 1] = "attempts"; h[#h + 1] = (tonumber(j.attempts) or 1) - 1
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
    h[#h + 1] = "ord"; h[#h + 1] = ord
    j.run_at, j.ord = run_at, ord
  end
  if TERMINAL[state] then
    h[#h + 1] = "finished_at"; h[#h + 1] = at
    if state == "completed" then h[#h + 1] = "progress"; h[#h + 1] = "100" end
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
  return 1
end

local n = tonumber(ARGV[3])
local out = {}
for k = 0, n - 1 do
  out[#out + 1] = apply(ARGV, 4 + k * 13)
end
return out
