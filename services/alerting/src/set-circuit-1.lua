-- Keeps the newest circuit state per breaker: opened/closed can arrive out of order across instances.
-- KEYS: 1 circuit states (hash: breaker -> state JSON with `at`)
-- ARGV: 1 breaker, 2 the state's time (ms), 3 state JSON
-- Returns: 1 when written, 0 when a newer state was already stored.
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cjson.decode(cur).at) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
