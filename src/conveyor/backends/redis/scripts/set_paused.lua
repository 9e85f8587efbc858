-- set_paused: pause or resume one channel, or (channel "") every channel; resuming
-- every channel also lifts the pauses of single channels. Resuming wakes the workers.
-- A channel named "*" is an ordinary channel here.
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
