-- cancel: an upcoming job becomes cancelled; a running one gets cancel_requested (its
-- worker ends it); a finished one is left alone. A cancelled job's dependents and batch
-- follow (workflow_finished in _lib_workflow.lua).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = job id, ARGV[3] = now
-- Returns: "cancelled" | "requested" | "finished" | "missing"
local id, now = ARGV[2], ARGV[3]
local j = fields(id, CORE)
if not j.state then return "missing" end
if j.state == "running" then
  redis.call("HSET", K.job(id), "cancel_requested", "1")
  return "requested"
end
if not UPCOMING[j.state] then return "finished" end
cancel_upcoming(id, j, now)
if j.has_dependents or j.batch_id then
  workflow_finished(id, "cancelled", now, j.has_dependents, j.batch_id)
end
return "cancelled"
