-- Takes the lock when it is free or already this owner's (a re-run of the job that took it).
-- KEYS: 1 the in-flight lock
-- ARGV: 1 owner (the job id), 2 ttl (ms)
-- Returns: 1 when taken, 0 when another owner holds it.
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
