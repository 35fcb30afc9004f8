-- A run reports how many billed calls (usage events) it made. When the ledger has settled that
-- many, the rest of the hold is given back now; otherwise the last settlement does it, and the
-- expiry moves to a backstop so a ledger that is behind never frees money it has yet to count.
-- KEYS: 1 the hold, 2 the hold expiry sorted set
-- ARGV: 1 hold id, 2 billed calls, 3 backstop expiry (epoch ms)
-- Returns: the micros given back now.
-- @include "release-hold.lua"
local settled = tonumber(redis.call('HGET', KEYS[1], 'settled'))
if not settled then return 0 end
if settled >= tonumber(ARGV[2]) then return release_hold(KEYS[1], KEYS[2], ARGV[1]) end
redis.call('HSET', KEYS[1], 'expect', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 0
