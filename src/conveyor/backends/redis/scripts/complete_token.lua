-- complete_token: complete a pending, unexpired token (state completed, its data,
-- completed_at) and, when its job is waiting on it, resume that job (queued at now,
-- wait_token cleared, a `resumed` event {"reason": "token"}), or hand it straight to an
-- idle worker whose standing claim would take it now, as an enqueue does (see the
-- hand-off in _lib_worker.lua). A job still running that later suspends on this token
-- finds it completed and is queued at once (see apply_outcome in _lib_worker.lua): the
-- two are scripts and never interleave.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = token id, ARGV[3] = data (JSON), ARGV[4] = now,
-- ARGV[5] = order_key(now)
-- Returns: {completed 1|0, job id|nil, resumed 1|2|0 (2: handed to a waiter), job name|nil,
--   tenant|nil, attempts}
--   (completed 0: unknown, expired or not pending; nothing changed)
local tid, data, now, ord = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local tk = K.token(tid)
local t = redis.call("HMGET", tk, "state", "expires_at", "job_id")
if t[1] ~= "pending" then return {0, false, 0, false, false, 0} end
local expires_at = nz(t[2])
if expires_at and tonumber(expires_at) <= tonumber(now) then
  return {0, false, 0, false, false, 0}
end
redis.call("HSET", tk, "state", "completed", "data", data, "completed_at", now)
local id = t[3]
local j = fields(id, WAITING_FIELDS)
local resumed = 0
if j.state == "waiting" and j.wait_token == tid then
  local data_ = '{"reason": "token"}'
  local ws = load_waiters(now)
  if ws and resume_to_waiter(ws, id, j, now, ord, data_) then
    hand_over(ws)
    resumed = 2
  else
    resume_waiting(id, j, now, ord, data_)
    resumed = 1
  end
end
return {1, id, resumed, nf(j.name), nf(j.tenant), j.attempts or "0"}
