-- cancel_jobs: cancel the upcoming jobs of one state that match a filter, one chunk
-- (newest first) per call; the caller repeats with the returned cursor until it is nil.
-- A cancelled job's dependents and batch follow (workflow_finished in _lib_workflow.lua).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3] = state (scheduled|queued|waiting),
-- ARGV[4] = cursor ("+inf" or "(<id>"), ARGV[5..] = filter (see list_jobs.lua)
-- Returns: {number cancelled, next cursor | nil}
local CHUNK = 500
local now, state, cursor = ARGV[2], ARGV[3], ARGV[4]
local f = read_filter(ARGV, 5)
local ids = redis.call("ZREVRANGEBYSCORE", K.state(state), cursor, "-inf", "LIMIT", 0, CHUNK)
local wanted = {"tags"}
for _, name in ipairs(CORE) do wanted[#wanted + 1] = name end
local n = 0
for _, id in ipairs(ids) do
  local j = fields(id, wanted)
  if j.state == state and matches(j, f) then
    cancel_upcoming(id, j, now)
    if j.has_dependents or j.batch_id then
      workflow_finished(id, "cancelled", now, j.has_dependents, j.batch_id)
    end
    n = n + 1
  end
end
if #ids < CHUNK then return {n, false} end
return {n, "(" .. ids[#ids]}
