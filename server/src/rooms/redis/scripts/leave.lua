-- Takes a peer out of a room; if it was there, publishes `L peer`. Idempotent, so several
-- relays may clean up after a stopped one at once.
-- With a relay (a sweep after that relay stopped), only a seat still on that relay goes:
-- a seat another relay took over since (a resumed session) stays.
-- KEYS: the room's members, the room's channel (one hash slot).
-- ARGV: peer, the publish command[, relay].
if ARGV[3] and redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[3] then
  return redis.call('HLEN', KEYS[1])
end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call(ARGV[2], KEYS[2], 'L ' .. ARGV[1])
end
return redis.call('HLEN', KEYS[1])
