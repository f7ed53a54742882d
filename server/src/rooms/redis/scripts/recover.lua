-- After Redis lost its data (no epoch) or a relay saw a new epoch: holds joins and id
-- reservations for ARGV[2] ms, time for every live relay to put its members back and raise
-- the counters, and sets a new epoch if there is none. Returns the epoch.
-- KEYS: the epoch, the hold (one hash slot). ARGV: a new epoch, the hold in ms.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return redis.call('GET', KEYS[1])
