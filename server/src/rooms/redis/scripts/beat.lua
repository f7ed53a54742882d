-- Renews a relay's liveness key, only while it exists; returns {renewed (1 or 0), epoch
-- ('' when Redis has none)}.
-- KEYS: the relay's liveness key, the epoch (one hash slot). ARGV: the timeout in ms.
local renewed = redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'XX')
return {renewed and 1 or 0, redis.call('GET', KEYS[2]) or ''}
