-- Gives back the holds whose requests died (past their expiry), oldest first.
-- KEYS: 1 the hold expiry sorted set
-- ARGV: 1 now (epoch ms), 2 the most to release, 3 the hold key prefix
-- Returns: how many holds expired.
-- @include "release-hold.lua"
return sweep_holds(KEYS[1], ARGV[3], ARGV[1], tonumber(ARGV[2]))
