-- Puts a member back into its room after Redis may have lost it (restarted empty, or a
-- promoted replica without the last writes). Already there: nothing. Still fits: added, and
-- `J peer` published for relays that never knew it. No longer fits (someone took the seat
-- meanwhile): `L peer` published, so that every relay takes it out, and 0 returned.
-- KEYS: the room's members, the room's channel (one hash slot).
-- ARGV: peer, relay, capacity, the publish command.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  redis.call(ARGV[4], KEYS[2], 'L ' .. ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[4], KEYS[2], 'J ' .. ARGV[1] .. ' ')
return 1
