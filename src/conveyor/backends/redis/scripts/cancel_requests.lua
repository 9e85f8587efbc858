-- cancel_requests: of these jobs, the running ones whose cancel was requested (read-only).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2..] = job ids
-- Returns: the ids with a pending cancel request
local out = {}
for i = 2, #ARGV do
  local j = fields(ARGV[i], {"state", "cancel_requested"})
  if j.state == "running" and j.cancel_requested then out[#out + 1] = ARGV[i] end
end
return out
