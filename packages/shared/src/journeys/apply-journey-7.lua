-- One journey transition, whole or not at all: a compare-and-set on the journey's revision, the
-- event id marked as applied (so a redelivery is refused), the new document, its place in the
-- idle sweep, the template version's counters and the transition's journey.* events on the bus.
-- KEYS: 1 journey hash, 2 applied event ids (set), 3 active journeys by idle deadline (zset),
--       4 template version stats (hash), 5 bus stream, 6 the owner's journey index, 7 all journeys index
-- ARGV: 1 expected revision ('' = the journey must not exist yet), 2 event id to mark applied ('' none),
--       3 new document (JSON), 4 new revision, 5 new state, 6 journey id,
--       7 idle deadline ms ('' = leave the sweep; '-' = keep its place), 8 start ms (index score on create, else ''),
--       9 only when idle: its deadline must be <= this ms ('' = no condition), 10 applied-ids ttl ms,
--       11 user id, 12 project id, 13 n stat increments, then n (field, amount),
--       then m events: n, then per event (type, schema tag, envelope JSON)
-- Returns: {'ok'} | {'conflict', current revision or ''} | {'seen'} | {'busy'} (no longer idle)
local rev = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] == '' then
  if rev then return {'conflict', rev} end
elseif rev ~= ARGV[1] then
  return {'conflict', rev or ''}
end
if ARGV[2] ~= '' and redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return {'seen'} end
if ARGV[9] ~= '' then
  local due = redis.call('ZSCORE', KEYS[3], ARGV[6])
  if not due or tonumber(due) > tonumber(ARGV[9]) then return {'busy'} end
end

redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'rev', ARGV[4], 'state', ARGV[5], 'user', ARGV[11], 'project', ARGV[12])
if ARGV[2] ~= '' then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[10])
end
if ARGV[7] == '' then
  redis.call('ZREM', KEYS[3], ARGV[6])
elseif ARGV[7] ~= '-' then
  redis.call('ZADD', KEYS[3], ARGV[7], ARGV[6])
end
if ARGV[8] ~= '' then
  redis.call('ZADD', KEYS[6], ARGV[8], ARGV[6])
  redis.call('ZADD', KEYS[7], ARGV[8], ARGV[6])
end
local n = tonumber(ARGV[13])
for i = 0, n - 1 do
  redis.call('HINCRBY', KEYS[4], ARGV[14 + 2 * i], ARGV[15 + 2 * i])
end
local at = 14 + 2 * n
for i = 0, tonumber(ARGV[at]) - 1 do
  -- The same fields as EventBus writes: type and journey readable without decoding the event.
  local e = at + 1 + 3 * i
  redis.call('XADD', KEYS[5], '*', 'type', ARGV[e], 'schema', ARGV[e + 1], 'journey', ARGV[6], 'event', ARGV[e + 2])
end
return {'ok'}
