-- Resolves this firing of the fingerprint (and no other). A budget window can be moved back so
-- thresholds the new budget no longer reaches fire again when they are crossed again.
-- KEYS: 1 fingerprint state hash, 2 alert record, 3 alert index, 4 scope's alert index,
--       5 firing set, 6 alerts stream, 7 budget window hash (any key when ARGV[9] is '')
-- ARGV: 1 alert id, 2 alert JSON, 3 now (ms), 4 stream max length, 5 kind, 6 scope, 7 scope id,
--       8 fingerprint, 9 the window's new highest threshold ('' leaves it), 10 retention (ms)
-- Returns: the stream id, or false when it was not firing (already resolved by someone else).
-- @include "notify.lua"
if redis.call('HGET', KEYS[1], 'alert_id') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'firing' then return false end
redis.call('HSET', KEYS[1], 'state', 'resolved')
redis.call('PEXPIRE', KEYS[1], ARGV[10])
redis.call('SREM', KEYS[5], ARGV[8])
if ARGV[9] ~= '' then
  local hi = tonumber(redis.call('HGET', KEYS[7], 'hi') or '0')
  if hi > tonumber(ARGV[9]) then redis.call('HSET', KEYS[7], 'hi', ARGV[9]) end
end
return notify(KEYS[2], KEYS[3], KEYS[4], KEYS[6], ARGV[1], ARGV[2], ARGV[4], ARGV[10], ARGV[5], 'resolved', ARGV[6], ARGV[7])
