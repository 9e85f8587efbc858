-- limit-redis complete. KEYS[1] = active zset, KEYS[2] = job hash prefix
-- ARGV[1] = lease token, ARGV[2] = finished_at, ARGV[3..] = job ids. Returns how many.
local done = 0
for i = 3, #ARGV do
    local key = KEYS[2] .. ARGV[i]
    if redis.call('HGET', key, 'lease') == ARGV[1] then
        redis.call('ZREM', KEYS[1], ARGV[i])
        redis.call('HSET', key, 'state', 'done', 'finished_at', ARGV[2], 'lease', '')
        done = done + 1
    end
end
return done
