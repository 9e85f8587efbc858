-- worker_remove: forget a worker (a clean stop); an unknown id changes nothing.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = worker id
-- Returns: 1
redis.call("HDEL", K.workers, ARGV[2])
redis.call("ZREM", K.workers_exp, ARGV[2])
return 1
