-- Deletes the lock only if it is still ours: a slow holder whose lock expired must not free a successor's.
-- KEYS: 1 the in-flight lock
-- ARGV: 1 the owner's token
-- Returns: 1 when deleted, 0 when it was not ours (or gone).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end
