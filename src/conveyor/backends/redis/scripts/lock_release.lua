-- lock_release: drop a named lease if the caller still owns it.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = name, ARGV[3] = owner
-- Returns: 1 if released, 0 otherwise
local key = K.lock(ARGV[2])
if redis.call("HGET", key, "owner") == ARGV[3] then
  redis.call("DEL", key)
  return 1
end
return 0
