-- Takes over a usage report claim only if it is still the stale pending one the caller read, so
-- two retries cannot both take it (the loser sees the winner's fresh claim and waits like any retry).
-- KEYS: 1 the report slot
-- ARGV: 1 the stale claim's nonce, 2 its `at` (epoch ms), 3 the fresh claim (JSON), 4 ttl ms
-- Returns: 1 taken over, 0 the slot holds something else now
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local cur = cjson.decode(raw)
if cur.state ~= 'pending' or cur.nonce ~= ARGV[1] or cur.at ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
