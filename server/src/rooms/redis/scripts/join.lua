-- Adds a peer to a room if it fits (idempotent: the writer sends again what a broken
-- connection may have cut), and publishes `J peer before,...` (the members it found)
-- in the same atomic step. Returns those members, or why not: 'full', 'many' (a new room
-- this relay may not create), 'lost' (Redis lost its data: the relays must put their
-- members back first) or 'hold' (they are putting them back).
-- KEYS: the room's members, the room's channel (one hash slot)[, the epoch, the hold].
-- ARGV: peer, relay, capacity, the publish command, may create ('1' or '0').
if #KEYS > 2 then
  if redis.call('EXISTS', KEYS[3]) == 0 then return 'lost' end
  if redis.call('EXISTS', KEYS[4]) == 1 then return 'hold' end
end
local members = redis.call('HKEYS', KEYS[1])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  -- Sent again after a connection broke under it: it is in already.
  local before = {}
  for _, member in ipairs(members) do
    if member ~= ARGV[1] then before[#before + 1] = member end
  end
  return before
end
if #members >= tonumber(ARGV[3]) then return 'full' end
if #members == 0 and ARGV[5] == '0' then return 'many' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call(ARGV[4], KEYS[2], 'J ' .. ARGV[1] .. ' ' .. table.concat(members, ','))
return members
