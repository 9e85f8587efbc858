-- worker_list: the registrations of the workers whose expires_at is after `now`; the
-- expired ones are deleted on the way (their worker died without saying goodbye).
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = now
-- Returns: the records (JSON texts), in no particular order
local expired = redis.call("ZRANGEBYSCORE", K.workers_exp, "-inf", ARGV[2])
if #expired > 0 then
  bulk("HDEL", K.workers, expired, 1)
  bulk("ZREM", K.workers_exp, expired, 1)
end
return redis.call("HVALS", K.workers)
