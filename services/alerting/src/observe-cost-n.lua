-- Per ledger entry, in one step: remembers the entry id (so contributor sums count it once, however
-- often it is delivered), keeps the highest running total per window (deliveries arrive out of
-- order across instances), adds the entry to the window's contributor sums, and reads back what
-- the decision needs: spend and highest threshold handled per window, budgets with revisions.
-- KEYS: 1 seen entry, then per window (spent, window hash), then per scope (budget, revision)
-- ARGV: 1 seen ttl s (0: observe only), 2 amount, 3 windows (n), 4 scopes (m), 5 fields (nf),
--       6..5+nf field names, then per window (spent, expire-at ms)
-- Returns: {1 if the entry is new else 0, per window (spent, highest threshold handled),
--          per scope (budget JSON or '', revision)}
local n, m, nf = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local fresh = 0
if ARGV[1] ~= '0' and redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then fresh = 1 end
local amount = tonumber(ARGV[2])
local out = {fresh}
local base = 5 + nf
for i = 0, n - 1 do
  local kSpent, win = KEYS[2 + i * 2], KEYS[3 + i * 2]
  local value, expireAt = ARGV[base + 1 + i * 2], ARGV[base + 2 + i * 2]
  local cur = redis.call('GET', kSpent)
  if (not cur and tonumber(value) > 0) or (cur and tonumber(value) > tonumber(cur)) then
    redis.call('SET', kSpent, value, 'PXAT', expireAt)
    cur = value
  end
  if fresh == 1 and amount > 0 then
    for f = 1, nf do redis.call('HINCRBY', win, ARGV[5 + f], ARGV[2]) end
    redis.call('PEXPIREAT', win, expireAt)
  end
  out[#out + 1] = cur or '0'
  out[#out + 1] = redis.call('HGET', win, 'hi') or '0'
end
for j = 0, m - 1 do
  out[#out + 1] = redis.call('GET', KEYS[2 + n * 2 + j * 2]) or ''
  out[#out + 1] = redis.call('GET', KEYS[3 + n * 2 + j * 2]) or '0'
end
return out
