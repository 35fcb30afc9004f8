-- Counts a batch of events into the analytics rollups, once each, in one atomic step.
--
-- Idempotency: if any event of the batch is already in its seen set, nothing is written and the
-- ids of those events come back; the writer drops them and runs the rest again. So an event
-- is counted with all its sums or not at all, and a redelivered or replayed event adds nothing.
-- The caller sums the batch's increments per bucket and field beforehand. Flat arguments, no
-- JSON: decoding a few hundred KB of JSON per batch cost Redis more than the increments.
--
-- KEYS: every key the batch touches (seen sets, rollup hashes, timelines, timeline subject sets).
-- ARGV: the separator between a field's series and metric, then sections, each led by its count
-- (key arguments are 1-based positions in KEYS):
--   C, then C seen set keys to check, the seen set key to add to, N, then N event ids
--   G, then G x (minute key, hour key, day key, R, then R x (series, pairs))
--     pairs: metric \29 amount \29, repeated (\29 is ASCII 0x1d, in no metric name)
--                                      -- HINCRBY of field series..sep..metric in all three
--   L, then L x (list key, member)                                               -- RPUSH (timelines)
--   S, then S x (set key, member)                                                -- SADD (subjects)
--   X, then X x (key, unix seconds)                                              -- EXPIREAT
-- Returns: {'dup', event ids...} and no write, or {'ok'}.
local p = 1
local function take()
  p = p + 1
  return ARGV[p - 1]
end
local function key() return KEYS[tonumber(take())] end

local sep = take()
local checks = {}
for i = 1, tonumber(take()) do checks[i] = key() end
local add = key()
local ids = {}
for i = 1, tonumber(take()) do ids[i] = take() end
local dups = {'dup'}
for _, k in ipairs(checks) do
  local found = redis.call('SMISMEMBER', k, unpack(ids))
  for i = 1, #ids do
    if found[i] == 1 then dups[#dups + 1] = ids[i] end
  end
end
if #dups > 1 then return dups end
redis.call('SADD', add, unpack(ids))
for _ = 1, tonumber(take()) do
  local m, h, d = key(), key(), key()
  for _ = 1, tonumber(take()) do
    local series = take() .. sep
    for metric, n in string.gmatch(take(), '([^\29]+)\29([^\29]+)\29') do
      local field = series .. metric
      redis.call('HINCRBY', m, field, n)
      redis.call('HINCRBY', h, field, n)
      redis.call('HINCRBY', d, field, n)
    end
  end
end
for _ = 1, tonumber(take()) do
  local k, member = key(), take()
  redis.call('RPUSH', k, member)
end
for _ = 1, tonumber(take()) do
  local k, member = key(), take()
  redis.call('SADD', k, member)
end
for _ = 1, tonumber(take()) do
  local k, at = key(), take()
  redis.call('EXPIREAT', k, at)
end
return {'ok'}
