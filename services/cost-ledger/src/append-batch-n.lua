-- Appends a batch of new entries and every aggregate they touch in one atomic step.
--
-- Idempotency: if any entry of the batch already exists, the script writes nothing and returns
-- the positions of those entries; the writer drops them and runs the rest again. So a batch is
-- either written whole, with its aggregates, or not at all: entries and aggregates can never
-- disagree, and a redelivered event adds nothing.
--
-- The caller sums the batch's increments per (key, field) beforehand: a batch of a few hundred
-- entries shares most fields (the day's total, a model, a user), so Redis does one HINCRBY per
-- distinct field instead of thirty per entry.
--
-- KEYS: 1..n the entry keys, then every other key the batch touches.
-- ARGV: 1 n, 2..n+1 entry JSON, n+2..2n+1 index member of each entry,
--       2n+2 JSON { z: [[key, entry positions...]], i: [[key, field, amount]], r: [[key, field]], p: [[key, fingerprint]],
--                   h: [[hold key, amount, hold id]], x: hold expiry key (0 without holds) }
-- Each h settles a request's budget hold with the entry's cost in the same step that adds the
-- cost to the totals, so held + spent never counts a call twice or not at all.
-- Returns: {'dup', positions...} and no write, or {'ok', value of each r field before the batch...}.
-- @include "../../../packages/shared/src/budget/release-hold.lua"
local n = tonumber(ARGV[1])
local dups = {}
for e = 1, n do
  if redis.call('EXISTS', KEYS[e]) == 1 then dups[#dups + 1] = tostring(e) end
end
if #dups > 0 then
  table.insert(dups, 1, 'dup')
  return dups
end
local plan = cjson.decode(ARGV[2 * n + 2])
local out = { 'ok' }
for _, r in ipairs(plan.r) do out[#out + 1] = redis.call('HGET', KEYS[r[1]], r[2]) or '0' end
for e = 1, n do redis.call('SET', KEYS[e], ARGV[1 + e]) end
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
for _, h in ipairs(plan.h) do settle_hold(KEYS[h[1]], KEYS[plan.x], h[3], h[2]) end
return out
