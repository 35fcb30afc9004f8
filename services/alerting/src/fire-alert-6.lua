-- Fires unless the fingerprint is already firing.
-- KEYS: 1 fingerprint state hash, 2 alert record, 3 alert index, 4 scope's alert index,
--       5 firing set, 6 alerts stream
-- ARGV: 1 alert id, 2 alert JSON, 3 now (ms), 4 stream max length, 5 kind, 6 scope, 7 scope id,
--       8 fingerprint
-- Returns: the stream id, or false.
-- @include "notify.lua"
if redis.call('HGET', KEYS[1], 'state') == 'firing' then return false end
redis.call('HSET', KEYS[1], 'alert_id', ARGV[1], 'state', 'firing')
redis.call('PERSIST', KEYS[1])
redis.call('SADD', KEYS[5], ARGV[8])
return notify(KEYS[2], KEYS[3], KEYS[4], KEYS[6], ARGV[1], ARGV[2], ARGV[4], 0, ARGV[5], 'firing', ARGV[6], ARGV[7])
