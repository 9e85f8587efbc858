-- delete_jobs: delete the given jobs unless running (running ones, and unknown ids, are
-- skipped), exactly as prune deletes one (delete_job in _lib.lua): out of the structure
-- of its state, its indexes, counts, group and idempotency bookkeeping, with its events,
-- logs, steps and tokens. Deleting an unfinished job counts as cancelling it for the jobs
-- waiting on it and for its batch (workflow_finished in _lib_workflow.lua), at now.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now, ARGV[3..] = job ids
-- Returns: the jobs deleted, flat: id, name, tenant ("" for none), attempts, ...
local out = {}
local now = ARGV[2]
for k = 3, #ARGV do
  local id = ARGV[k]
  local j = fields(id, CORE)
  if j.state and j.state ~= "running" then
    if UPCOMING[j.state] and (j.has_dependents or j.batch_id) then
      workflow_finished(id, "cancelled", now, j.has_dependents, j.batch_id)
    end
    delete_job(id, j)
    out[#out + 1] = id
    out[#out + 1] = j.name or ""
    out[#out + 1] = j.tenant or ""
    out[#out + 1] = j.attempts or "0"
  end
end
return out
