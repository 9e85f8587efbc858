-- lock_acquire: take or renew a named lease. Expiry is decided with the caller's clock
-- (expires_at); the Redis TTL only garbage-collects abandoned locks.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = name, ARGV[3] = owner, ARGV[4] = now, ARGV[5] = expires_at,
-- ARGV[6] = garbage-collection TTL in milliseconds
-- Returns: 1 if the caller holds the lock now, 0 if another owner holds it unexpired
local key = K.lock(ARGV[2])
local cur = redis.call("HMGET", key, "owner", "expires_at")
if cur[1] and cur[1] ~= ARGV[3] and tonumber(cur[2]) > tonumber(ARGV[4]) then return 0 end
redis.call("HSET", key, "owner", ARGV[3], "expires_at", ARGV[5])
redis.call("PEXPIRE", key, ARGV[6])
return 1
