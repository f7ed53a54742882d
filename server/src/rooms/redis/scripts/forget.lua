-- Deletes a session's record if it still names the given relay (one that stopped): a session
-- that moved to another relay since keeps the record that relay wrote.
-- KEYS: the session's record. ARGV: the record's start while on that relay ('S relay ').
local record = redis.call('GET', KEYS[1])
if record and string.sub(record, 1, #ARGV[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
