-- Counts an error once by event id in a sliding window.
-- KEYS: 1 the service and category's errors (sorted set: event id by time)
-- ARGV: 1 the error's time (ms), 2 event id, 3 window start (ms; older ones are dropped), 4 ttl (ms)
-- Returns: the count in the window.
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])
