-- Counts a batch of events into the analytics rollups, once each, in one atomic step.
--
-- Idempotency: if any event of the batch is already in its seen set, nothing is written and the
-- positions of those events come back; the writer drops them and runs the rest again. So an event
-- is counted with all its sums or not at all, and a redelivered or replayed event adds nothing.
-- The caller sums the batch's increments per (key, field) beforehand.
--
-- KEYS: every key the batch touches (seen sets, rollup hashes, timelines, timeline subject sets).
-- ARGV[1]: JSON {
--   e: [[seen key index, event id], ...]     one per event, in batch order
--   i: [[hash key index, field, amount], ...] HINCRBY
--   l: [[list key index, member], ...]        RPUSH (funnel timelines)
--   s: [[set key index, member], ...]         SADD (timeline subjects)
--   x: [[key index, unix seconds], ...]       EXPIREAT (each key's retention)
-- }
-- Returns: {'dup', positions...} and no write, or {'ok'}.
local plan = cjson.decode(ARGV[1])
local dups = {}
for p, e in ipairs(plan.e) do
  if redis.call('SISMEMBER', KEYS[e[1]], e[2]) == 1 then dups[#dups + 1] = tostring(p) end
end
if #dups > 0 then
  table.insert(dups, 1, 'dup')
  return dups
end
for _, e in ipairs(plan.e) do redis.call('SADD', KEYS[e[1]], e[2]) end
for _, i in ipairs(plan.i) do redis.call('HINCRBY', KEYS[i[1]], i[2], i[3]) end
for _, l in ipairs(plan.l) do redis.call('RPUSH', KEYS[l[1]], l[2]) end
for _, s in ipairs(plan.s) do redis.call('SADD', KEYS[s[1]], s[2]) end
for _, x in ipairs(plan.x) do redis.call('EXPIREAT', KEYS[x[1]], x[2]) end
return {'ok'}
