-- throughput: per bucket of finished_at, the number of jobs in each final state (read-only).
-- Bucket i covers [since + i * width, since + (i + 1) * width); its bounds are computed
-- here exactly as Python computes them and sent to ZCOUNT with 17 significant digits (a
-- double's exact decimal form). Each state's range is halved until the counts are per
-- bucket, skipping empty halves: ZCOUNT calls grow with the buckets that have jobs
-- (times log2 of the number of buckets), not with the number of buckets or of jobs.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = since, ARGV[3] = width (seconds, > 0), ARGV[4] = buckets (> 0)
-- Returns: flat, by bucket index: index, completed, failed, cancelled, ... (buckets
-- without any job left out)
local since, width, n = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local STATES = {"completed", "failed", "cancelled"}
local rows, order = {}, {}

local function bound(i)
  return string.format("%.17g", since + i * width)
end

-- `total` jobs of `key` finished in buckets [lo, hi)
local function split(key, s, lo, hi, total)
  if hi - lo == 1 then
    local row = rows[lo]
    if not row then
      row = {0, 0, 0}
      rows[lo] = row
      order[#order + 1] = lo
    end
    row[s] = total
    return
  end
  local mid = math.floor((lo + hi) / 2)
  local left = redis.call("ZCOUNT", key, bound(lo), "(" .. bound(mid))
  if left > 0 then split(key, s, lo, mid, left) end
  if total > left then split(key, s, mid, hi, total - left) end
end

for s, state in ipairs(STATES) do
  local key = K.done(state)
  local total = redis.call("ZCOUNT", key, bound(0), "(" .. bound(n))
  if total > 0 then split(key, s, 0, n, total) end
end
table.sort(order)
local out = {}
for _, i in ipairs(order) do
  local row = rows[i]
  out[#out + 1] = i
  out[#out + 1] = row[1]
  out[#out + 1] = row[2]
  out[#out + 1] = row[3]
end
return out
