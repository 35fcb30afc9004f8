-- The budget windows of one cost event (or of a re-evaluation), in one step: keeps the highest
-- running total per window and reads back what the decision needs: spend and the highest threshold
-- handled per window, budget and revision per scope, and the budget index version (the caller
-- keeps the index in memory and reloads it when this moved).
--
-- Idempotent by itself, with no per-entry marker: the one write is the spend, set only when the new
-- figure is higher (a maximum: a redelivered, replayed or out-of-order event changes nothing, and
-- two instances converge on the same value), with an expiry that depends on the period alone.
-- Thresholds, blocks and notices are written by apply-cost-window-9 behind a compare-and-set on the
-- budget revision and the window's `hi`, and top contributors are read from the ledger.
--
-- Only scopes with a budget are passed. A re-evaluation (a budget written) also names the scope's
-- field in the ledger's running totals: the spend then starts from the ledger, which counted the
-- entries alerting skipped while the scope had no budget.
-- KEYS: 1 budget index version, then per window (spent, window hash, the ledger's running totals
--       hash of the period, or any key of the slot when its field is ''), then per scope (budget, revision)
-- ARGV: 1 windows (n), 2 scopes (m), then per window (running total the event carries (0: none),
--       spent expires at (ms), the scope's ledger field ('': not read))
-- Returns: {index version, per window (spent, highest threshold handled), per scope (budget JSON or '', revision)}
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {redis.call('GET', KEYS[1]) or '0'}
for i = 0, n - 1 do
  local kSpent, win, ledger = KEYS[2 + i * 3], KEYS[3 + i * 3], KEYS[4 + i * 3]
  local value, expireAt, field = tonumber(ARGV[3 + i * 3]), ARGV[4 + i * 3], ARGV[5 + i * 3]
  if field ~= '' then
    local counted = tonumber(redis.call('HGET', ledger, field) or '0')
    if counted > value then value = counted end
  end
  local cur = redis.call('GET', kSpent)
  if value > 0 and (not cur or value > tonumber(cur)) then
    cur = string.format('%.0f', value)
    redis.call('SET', kSpent, cur, 'PXAT', expireAt)
  end
  out[#out + 1] = cur or '0'
  out[#out + 1] = redis.call('HGET', win, 'hi') or '0'
end
for j = 0, m - 1 do
  out[#out + 1] = redis.call('GET', KEYS[2 + n * 3 + j * 2]) or ''
  out[#out + 1] = redis.call('GET', KEYS[3 + n * 3 + j * 2]) or '0'
end
return out
