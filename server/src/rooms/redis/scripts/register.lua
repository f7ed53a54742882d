-- Registers a relay: its liveness key, its place among the relays, and the epoch of
-- Redis's data (set by the first relay to come, kept by the rest). Returns the epoch.
-- KEYS: the relay's liveness key, the set of relays, the epoch (one hash slot).
-- ARGV: the relay's id, its timeout in ms, an epoch to set if there is none.
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[3], 'NX')
return redis.call('GET', KEYS[3])
