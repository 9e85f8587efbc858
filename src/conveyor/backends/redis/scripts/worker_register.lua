-- worker_register: create or replace a worker's registration (also its heartbeat).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = worker id, ARGV[3] = expires_at, ARGV[4] = the record (JSON,
-- stored as given)
-- Returns: 1
redis.call("HSET", K.workers, ARGV[2], ARGV[4])
redis.call("ZADD", K.workers_exp, ARGV[3], ARGV[2])
return 1
