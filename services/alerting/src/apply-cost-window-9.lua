-- One budget window (scope, period, period key). Applies only if neither the budget (revision)
-- nor the window (highest threshold handled) changed since they were read; otherwise the caller
-- re-reads and decides again. Sets the hard-budget block, and fires the highest crossed
-- threshold: lower thresholds crossed by the same jump are inhibited by moving the window past them.
-- KEYS: 1 budget revision, 2 window hash, 3 block, 4 fingerprint state hash, 5 alert record,
--       6 alert index, 7 scope's alert index, 8 firing set, 9 alerts stream
-- ARGV: 1 expected revision, 2 expected highest threshold, 3 set block (1/0), 4 block JSON,
--       5 block until (ms), 6 window expires at (ms), 7 threshold to fire (0: none), 8 alert id,
--       9 alert JSON, 10 now (ms), 11 stream max length, 12 kind, 13 scope, 14 scope id, 15 fingerprint
-- Returns: {0} on a conflict, {1} when applied without a notice, {2, stream id} when it fired.
-- @include "notify.lua"
local rev = redis.call('GET', KEYS[1]) or '0'
local hi = redis.call('HGET', KEYS[2], 'hi') or '0'
if rev ~= ARGV[1] or hi ~= ARGV[2] then return {0} end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], ARGV[4], 'PXAT', ARGV[5]) end
if ARGV[7] == '0' then return {1} end
redis.call('HSET', KEYS[2], 'hi', ARGV[7])
redis.call('PEXPIREAT', KEYS[2], ARGV[6])
if redis.call('HGET', KEYS[4], 'state') == 'firing' then return {1} end
redis.call('HSET', KEYS[4], 'alert_id', ARGV[8], 'state', 'firing')
redis.call('PERSIST', KEYS[4])
redis.call('SADD', KEYS[8], ARGV[15])
local id = notify(KEYS[5], KEYS[6], KEYS[7], KEYS[9], ARGV[8], ARGV[9], ARGV[11], 0, 'cost', 'firing', ARGV[13], ARGV[14])
return {2, id}
