-- dependency_results: the results of the jobs one job depends on (see _lib_workflow.lua).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = job id
-- Returns: flat: dependency id, its result (JSON text) | nil (gone, or none), ...
local out = {}
for _, dep in ipairs(redis.call("LRANGE", K.deps(ARGV[2]), 0, -1)) do
  out[#out + 1] = dep
  out[#out + 1] = nf(redis.call("HGET", K.job(dep), "result"))
end
return out
