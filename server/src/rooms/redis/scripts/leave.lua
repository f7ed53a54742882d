-- Takes a peer out of a room; if it was there, publishes `L peer`. Idempotent, so several
-- relays may clean up after a stopped one at once.
-- KEYS: the room's members, the room's channel (one hash slot).
-- ARGV: peer, the publish command.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call(ARGV[2], KEYS[2], 'L ' .. ARGV[1])
end
return redis.call('HLEN', KEYS[1])
