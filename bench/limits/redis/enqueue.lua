-- limit-redis enqueue. KEYS[1] = id counter, KEYS[2] = ready zset, KEYS[3] = job hash prefix
-- ARGV[1] = payload (JSON), ARGV[2] = run_at (score)
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3] .. id, 'state', 'queued', 'channel', 'default',
           'payload', ARGV[1], 'attempts', 0, 'run_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], id)
return id
