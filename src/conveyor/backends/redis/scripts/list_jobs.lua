-- list_jobs: jobs matching a filter, newest first (by id), paged by before_id. Scans the
-- state's id index (or every job) and filters here; at most LIST_SCAN jobs are examined
-- per call, so a very selective filter over a huge history may return fewer than limit.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = state|"", ARGV[3] = before_id|"", ARGV[4] = limit,
-- ARGV[5..] = filter: name|"", channel|"", tenant|"", name prefix|"", tag mode, counted
-- tags (-1 = None)
-- Returns: one flat HGETALL array (field, value, ...) per job
local LIST_SCAN = 10000
local CHUNK = 200
local state, before, limit = nz(ARGV[2]), nz(ARGV[3]), tonumber(ARGV[4])
local f = read_filter(ARGV, 5)
local key = state and K.state(state) or K.all
local max = before and ("(" .. before) or "+inf"
local plain = not (f.name or f.channel or f.tenant or f.prefix or f.tags)
local out, examined = {}, 0
while #out < limit and examined < LIST_SCAN do
  local ids = redis.call("ZREVRANGEBYSCORE", key, max, "-inf", "LIMIT", 0, CHUNK)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    examined = examined + 1
    if plain or matches(fields(id, FILTER_FIELDS), f) then
      local flat = redis.call("HGETALL", K.job(id))
      if #flat > 0 then out[#out + 1] = flat end
      if #out >= limit then break end
    end
  end
  max = "(" .. ids[#ids]
end
return out
