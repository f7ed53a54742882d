-- Moves a member's seat from one relay to another (a session resumed on another relay), if
-- it is still on the first, and publishes `H peer from to members,...` in the same atomic
-- step: from that point in the room's channel, the new relay delivers to it. Returns 1 if
-- it moved, 0 if not.
-- KEYS: the room's members, the room's channel (one hash slot).
-- ARGV: peer, from relay, to relay, the publish command.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local members = redis.call('HKEYS', KEYS[1])
redis.call(ARGV[4], KEYS[2],
  'H ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. table.concat(members, ','))
return 1
