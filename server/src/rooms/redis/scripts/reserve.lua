-- Reserves a block of ids from a counter: returns the last of them. A counter that does
-- not exist (a new deployment, or Redis lost its data) starts from Redis's clock, 16 ids per
-- millisecond since 2025, so ids stay unique across a loss of data unless more than 16,000
-- a second were handed out on average since the counter last started.
-- KEYS: the counter. ARGV: the block's size.
if redis.call('EXISTS', KEYS[1]) == 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('SET', KEYS[1], string.format('%d', (ms - 1735689600000) * 16))
end
return redis.call('INCRBY', KEYS[1], ARGV[1])
