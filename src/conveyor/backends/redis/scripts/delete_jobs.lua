-- delete_jobs: delete the given jobs unless running (running ones, and unknown ids, are
-- skipped), exactly as prune deletes one (delete_job in _lib.lua): out of the structure
-- of its state, its indexes, counts, group and idempotency bookkeeping, with its events,
-- logs, steps and tokens.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2..] = job ids
-- Returns: the jobs deleted, flat: id, name, tenant ("" for none), attempts, ...
local out = {}
for k = 2, #ARGV do
  local id = ARGV[k]
  local j = fields(id, CORE)
  if j.state and j.state ~= "running" then
    delete_job(id, j)
    out[#out + 1] = id
    out[#out + 1] = j.name or ""
    out[#out + 1] = j.tenant or ""
    out[#out + 1] = j.attempts or "0"
  end
end
return out
