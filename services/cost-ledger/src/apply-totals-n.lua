-- Step 2 of an append, under the namespace's own tag: adds a batch of entries (written by step 1
-- in their shards) to the running totals that budgets are judged against (day, week, month x
-- total, user, project), and settles their budget holds, in one atomic step.
--
-- Idempotency: an entry's id goes into the applied set of the day of applying; if any entry of the
-- batch is in one of the sets checked, nothing is written and their positions come back; the
-- writer drops them and runs the rest again. Step 2 runs only for entries step 1 wrote now or still
-- marks pending, and the writer clears the pending mark after it, so the applied sets need only
-- outlive a crash between the steps and the redelivery that heals it. The writer checks today's
-- set, and yesterday's too when an entry was pending or the day has just begun (an entry step 1
-- wrote now can only have been applied by another instance in the same seconds).
--
-- KEYS: 1..c applied sets to check (the first is today's, added to), then every other key.
-- ARGV: 1 c, 2 today's set's expiry (unix seconds; '' when already set), 3 n, 4..n+3 entry ids,
--       n+4 JSON { i: [[key, field, amount]], h: [[hold key, amount, hold id]],
--                  x: hold expiry key (0 without holds) }
-- Each h settles a request's budget hold with the entry's cost in the same step that adds the
-- cost to the totals, so held + spent never counts a call twice or not at all.
-- Returns: {'dup', positions...} and no write, or {'ok', new value of each increment, in order...}
-- (every field here is a running total: the caller subtracts the batch's own share, so no field
-- is read as well as written).
-- @include "../../../packages/shared/src/budget/release-hold.lua"
local c, n = tonumber(ARGV[1]), tonumber(ARGV[3])
local ids = {}
for e = 1, n do ids[e] = ARGV[3 + e] end
local dups = {'dup'}
for s = 1, c do
  local found = redis.call('SMISMEMBER', KEYS[s], unpack(ids))
  for e = 1, n do
    if found[e] == 1 then dups[#dups + 1] = tostring(e) end
  end
end
if #dups > 1 then return dups end
redis.call('SADD', KEYS[1], unpack(ids))
if ARGV[2] ~= '' then redis.call('EXPIREAT', KEYS[1], ARGV[2]) end
local plan = cjson.decode(ARGV[n + 4])
local out = { 'ok' }
for _, inc in ipairs(plan.i) do
  out[#out + 1] = redis.call('HINCRBY', KEYS[inc[1]], inc[2], string.format('%.0f', inc[3]))
end
for _, h in ipairs(plan.h) do settle_hold(KEYS[h[1]], KEYS[plan.x], h[3], h[2]) end
return out
