-- Writes or deletes a budget and, in the same step, makes each period's block agree with it and
-- the spend seen so far: raising a hard budget lifts the block before the PUT returns, lowering it
-- below the spend blocks at once. The revision bump makes in-flight evaluations that read the old
-- budget retry, and the dirty mark makes the alerting service re-evaluate (resolve or fire).
-- KEYS: 1 budget document, 2 its revision, 3 budget index (set), 4 dirty budgets (set),
--       5..7 block of day, week, month, 8..10 spend of the current day, week, month
-- ARGV: 1 budget JSON ('' deletes it), 2 index member 'scope:id',
--       then per period (day, week, month): limit micros (0: none), hard (1/0), period end (ms)
-- Returns: {revision, 1 if a budget existed before else 0}
local rev = redis.call('INCR', KEYS[2])
local existed = redis.call('EXISTS', KEYS[1])
if ARGV[1] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[3], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[3], ARGV[2])
end
redis.call('SADD', KEYS[4], ARGV[2])
for i = 0, 2 do
  local limit = ARGV[3 + i * 3]
  local spent = redis.call('GET', KEYS[8 + i]) or '0'
  if ARGV[4 + i * 3] == '1' and tonumber(limit) > 0 and tonumber(spent) >= tonumber(limit) then
    redis.call('SET', KEYS[5 + i], '{"spent_micros":' .. spent .. ',"limit_micros":' .. limit .. '}', 'PXAT', ARGV[5 + i * 3])
  else
    redis.call('DEL', KEYS[5 + i])
  end
end
return {rev, existed}
