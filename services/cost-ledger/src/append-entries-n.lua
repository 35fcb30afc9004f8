-- Step 1 of an append, in the entries' tenant shard: a batch of new entries with their indexes
-- and every day detail they touch (the shard's, their users' and projects'), in one atomic step
-- (step 2, apply-totals-n.lua, adds them to the running totals under the namespace's own tag).
--
-- Idempotency: if any entry of the batch already exists, the script writes nothing and returns
-- the positions of those entries, each with whether it is still pending (written, its totals maybe
-- not applied: a crash between the steps); the writer drops them (running step 2 for the pending
-- ones) and runs the rest again. So a batch is written whole, with its detail, or not at all, and
-- a redelivered event adds nothing here.
--
-- The caller sums the batch's increments per (key, field) beforehand.
--
-- KEYS: 1..n the entry keys, n+1 the shard's pending set, then every other key the batch touches.
-- ARGV: 1 n, 2..n+1 entry JSON, n+2..2n+1 index member of each entry, 2n+2..3n+1 entry ids,
--       3n+2 JSON { z: [[key, entry positions...]], i: [[key, field, amount]], p: [[key, fingerprint]] }
-- Returns: {'dup', position, pending (1|0), ...} and no write, or {'ok'}.
local n = tonumber(ARGV[1])
local pending = KEYS[n + 1]
local dups = {'dup'}
for e = 1, n do
  if redis.call('EXISTS', KEYS[e]) == 1 then
    dups[#dups + 1] = tostring(e)
    dups[#dups + 1] = tostring(redis.call('SISMEMBER', pending, ARGV[2 * n + 1 + e]))
  end
end
if #dups > 1 then return dups end
local plan = cjson.decode(ARGV[3 * n + 2])
local ids = {}
for e = 1, n do
  redis.call('SET', KEYS[e], ARGV[1 + e])
  ids[e] = ARGV[2 * n + 1 + e]
end
redis.call('SADD', pending, unpack(ids))
for _, z in ipairs(plan.z) do
  local args = {}
  for i = 2, #z do
    args[#args + 1] = 0
    args[#args + 1] = ARGV[n + 1 + z[i]]
  end
  redis.call('ZADD', KEYS[z[1]], unpack(args))
end
for _, inc in ipairs(plan.i) do redis.call('HINCRBY', KEYS[inc[1]], inc[2], string.format('%.0f', inc[3])) end
for _, p in ipairs(plan.p) do redis.call('PFADD', KEYS[p[1]], p[2]) end
return {'ok'}
