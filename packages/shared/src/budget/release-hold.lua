-- Included by the scripts that end a budget hold (admission's sweep, finish, sweep, the ledger).
-- A hold is a hash: amt (micros still held), cells ("<held hash key>\t<field>" lines: where amt
-- is counted), settled (ledger entries seen), expect (billed calls the run reported; -1 unknown).
-- Returns the micros it gave back.
local function release_hold(key, expiry, id)
  redis.call('ZREM', expiry, id)
  local h = redis.call('HMGET', key, 'amt', 'cells')
  redis.call('DEL', key)
  local amt = tonumber(h[1])
  if not amt then return 0 end
  if amt > 0 then
    for cell_key, field in string.gmatch(h[2], '([^\t\n]+)\t([^\n]+)') do
      redis.call('HINCRBY', cell_key, field, -amt)
    end
  end
  return amt
end

-- The ledger settles `amount` of a hold: that much moves from held to spent (the caller adds the
-- spend), and once every billed call the run reported is settled the rest is given back.
local function settle_hold(key, expiry, id, amount)
  local h = redis.call('HMGET', key, 'amt', 'cells', 'expect')
  local amt = tonumber(h[1])
  if not amt then return end
  local dec = math.min(amt, amount)
  if dec > 0 then
    for cell_key, field in string.gmatch(h[2], '([^\t\n]+)\t([^\n]+)') do
      redis.call('HINCRBY', cell_key, field, -dec)
    end
    redis.call('HINCRBY', key, 'amt', -dec)
  end
  local settled = redis.call('HINCRBY', key, 'settled', 1)
  local expect = tonumber(h[3]) or -1
  if expect >= 0 and settled >= expect then release_hold(key, expiry, id) end
end

-- Holds past their expiry (their request died): at most `limit` of them, oldest first.
local function sweep_holds(expiry, prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do release_hold(prefix .. id, expiry, id) end
  return #due
end
