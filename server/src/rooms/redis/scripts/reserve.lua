-- Reserves a block of peer ids: returns the last of them, or 'lost' / 'hold' as join.lua
-- does, so that no id is handed out before every relay has raised the counter past its own.
-- KEYS: the peer id counter, the epoch, the hold (one hash slot). ARGV: the block's size.
if redis.call('EXISTS', KEYS[2]) == 0 then return 'lost' end
if redis.call('EXISTS', KEYS[3]) == 1 then return 'hold' end
return redis.call('INCRBY', KEYS[1], ARGV[1])
