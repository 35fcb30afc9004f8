-- Writes or deletes a budget and, in the same step, makes each period's block agree with it and
-- the spend so far: raising a hard budget lifts the block before the PUT returns, lowering it
-- below the spend blocks at once. The revision bump makes in-flight evaluations that read the old
-- budget retry, and the dirty mark makes the alerting service re-evaluate (resolve or fire).
-- The spend is the higher of alerting's copy and the ledger's running total: alerting tracks only
-- scopes with a budget, so a new budget starts from the ledger, and its copy is raised to it here
-- (the highest total wins, so writing it again changes nothing). Joining or leaving the index bumps
-- its version, which tells every alerting instance to reload the scopes it tracks.
-- KEYS: 1 budget document, 2 its revision, 3 budget index (set), 4 dirty budgets (set),
--       5 budget index version, 6..8 block of day, week, month,
--       9..11 alerting's spend of the current day, week, month,
--       12..14 the ledger's running totals of the current day, week, month (hashes)
-- ARGV: 1 budget JSON ('' deletes it), 2 index member 'scope:id', 3 the scope's field in the
--       ledger's running totals ('total', 'user:<id>', 'project:<id>'),
--       then per period (day, week, month): limit micros (0: none), hard (1/0), period end (ms)
-- Returns: {revision, 1 if a budget existed before else 0}
local DAY_MS = 86400000
local rev = redis.call('INCR', KEYS[2])
local existed = redis.call('EXISTS', KEYS[1])
local moved
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
  moved = redis.call('SREM', KEYS[3], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
  moved = redis.call('SADD', KEYS[3], ARGV[2])
end
if moved == 1 then redis.call('INCR', KEYS[5]) end
redis.call('SADD', KEYS[4], ARGV[2])
for i = 0, 2 do
  local limit, hard, endMs = tonumber(ARGV[4 + i * 3]), ARGV[5 + i * 3], tonumber(ARGV[6 + i * 3])
  local spent = tonumber(redis.call('GET', KEYS[9 + i]) or '0')
  local ledger = tonumber(redis.call('HGET', KEYS[12 + i], ARGV[3]) or '0')
  if ledger > spent then
    spent = ledger
    if ARGV[1] ~= '' then redis.call('SET', KEYS[9 + i], string.format('%.0f', spent), 'PXAT', string.format('%.0f', endMs + DAY_MS)) end
  end
  if hard == '1' and limit > 0 and spent >= limit then
    redis.call('SET', KEYS[6 + i], '{"spent_micros":' .. string.format('%.0f', spent) .. ',"limit_micros":' .. string.format('%.0f', limit) .. '}', 'PXAT', string.format('%.0f', endMs))
  else
    redis.call('DEL', KEYS[6 + i])
  end
end
return {rev, existed}
