-- limit-redis claim. KEYS[1] = ready zset, KEYS[2] = active zset, KEYS[3] = job hash prefix
-- ARGV[1] = N, ARGV[2] = lease token, ARGV[3] = lease expiry (score)
-- Returns {id1, payload1, id2, payload2, ...}.
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
local out = {}
for i = 1, #popped, 2 do
    local id = popped[i]
    local key = KEYS[3] .. id
    redis.call('HSET', key, 'state', 'running', 'lease', ARGV[2], 'lease_expires', ARGV[3])
    redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', key, 'payload')
end
return out
