-- set_paused: pause or resume one channel, or (channel "") every channel. The pause of
-- every channel (P paused_all) is kept apart from the paused channels (P paused): resuming
-- one channel leaves it in place, resuming every channel lifts both, and any channel name
-- ("*" included) is just a channel. Resuming wakes the workers.
-- KEYS[1] = P id
-- ARGV[1] = P, ARGV[2] = channel, or "" for every channel, ARGV[3] = "1" pause, "0" resume
-- Returns: 1
local ch, pause = ARGV[2], ARGV[3] == "1"
if ch == "" then
  if pause then
    redis.call("SET", K.paused_all, "1")
  else
    redis.call("DEL", K.paused_all, K.paused)
    for _, c in ipairs(redis.call("SMEMBERS", K.channels)) do wake_channel(c) end
  end
elseif pause then
  redis.call("SADD", K.paused, ch)
else
  redis.call("SREM", K.paused, ch)
  wake_channel(ch)
end
return 1
