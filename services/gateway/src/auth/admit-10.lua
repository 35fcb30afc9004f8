-- Everything a request must pass before it is served, in one round trip: the key (by its hash,
-- or the operator's record passed in), its scope, the per-key rate limit (a fixed window) and, for
-- paid work, a hold of the request's worst-case cost on every hard budget of the caller's user,
-- project and the global scope: refused when spent + held + worst case > limit on any of them.
-- Spent is the ledger's running totals (written with each entry), held the other requests' holds.
-- KEYS: 1 the key record (by hash); 2..4 ledger running totals: day, week, month;
--       5..7 held totals: day, week, month; 8 hold expiry sorted set; 9 this request's hold;
--       10 the journey named by x-tollgate-journey (its hash; any key when there is none)
-- ARGV: 1 inline record ('' to read KEYS[1]), 2 scope, 3 rate key prefix, 4 window ms,
--       5 requests per window, 6 '1' for paid work (else the rest is absent),
--       7 now (ms), 8 hold id, 9 hold expiry (ms), 10 hold key prefix,
--       11 budget key template ({SCOPE}, {ID}), 12 conversation key template ({USER}) or '',
--       13 most history messages, 14 input tokens of the request itself,
--       15..17 when the held hashes may expire (day, week, month; ms),
--       18 n targets, then per target: input micros per 1M tokens, fixed micros (capped output, units),
--       then the journey id ('' for none)
-- Returns: {'unknown'} | {'forbidden', raw} | {'journey', raw, 'missing' | 'forbidden' | its state} | {'rate_limited', raw, count, ttl}
--   | {'ok', raw, count, ttl, worst, history tokens, expired, hold id or ''}
--   | {'over', raw, count, ttl, worst, history tokens, expired, scope (1-3), period (1-3), spent, held, limit}
-- @include "../../../../packages/shared/src/budget/release-hold.lua"
local raw = ARGV[1]
if raw == '' then raw = redis.call('GET', KEYS[1]) end
if not raw then return {'unknown'} end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' or type(rec.key_id) ~= 'string' then return {'unknown'} end
local allowed = false
for _, s in ipairs(rec.scopes or {}) do
  if s == ARGV[2] or s == 'admin' then allowed = true end
end
if not allowed then return {'forbidden', raw} end
-- A journey from another tenant is refused before anything is counted or held.
if ARGV[6] == '1' then
  local jid = ARGV[19 + 2 * tonumber(ARGV[18])]
  if jid and jid ~= '' then
    local j = redis.call('HMGET', KEYS[10], 'user', 'project', 'state')
    if not j[1] then return {'journey', raw, 'missing'} end
    if j[1] ~= rec.user_id or j[2] ~= rec.project_id then return {'journey', raw, 'forbidden'} end
    if j[3] ~= 'active' then return {'journey', raw, j[3]} end
  end
end
local rate = ARGV[3] .. rec.key_id
local count = redis.call('INCR', rate)
local ttl = redis.call('PTTL', rate)
if ttl < 0 then
  redis.call('PEXPIRE', rate, ARGV[4])
  ttl = tonumber(ARGV[4])
end
if count > tonumber(ARGV[5]) then return {'rate_limited', raw, count, ttl} end
if ARGV[6] ~= '1' then return {'ok', raw, count, ttl} end

local expired = sweep_holds(KEYS[8], ARGV[10], ARGV[7], 4)
local esc = function(s) return (string.gsub(tostring(s), '%%', '%%%%')) end

local history = 0
if ARGV[12] ~= '' then
  local conv = string.gsub(ARGV[12], '{USER}', esc(rec.user_id))
  for _, item in ipairs(redis.call('LRANGE', conv, -tonumber(ARGV[13]), -1)) do history = history + #item end
end
local tokens = tonumber(ARGV[14]) + history
local worst = 0
for t = 0, tonumber(ARGV[18]) - 1 do
  local cost = math.ceil(tokens * tonumber(ARGV[19 + 2 * t]) / 1000000) + tonumber(ARGV[20 + 2 * t])
  if cost > worst then worst = cost end
end

local PERIOD = {day = 1, week = 2, month = 3}
local scopes = {{'user', rec.user_id, 'user:' .. tostring(rec.user_id)}, {'project', rec.project_id, 'project:' .. tostring(rec.project_id)}, {'global', 'global', 'total'}}
local hard = {}
for s = 1, 3 do
  local doc = redis.call('GET', (string.gsub(string.gsub(ARGV[11], '{SCOPE}', scopes[s][1]), '{ID}', esc(scopes[s][2]))))
  if doc then
    local okd, b = pcall(cjson.decode, doc)
    if okd and type(b) == 'table' and type(b.periods) == 'table' then
      for _, p in ipairs(b.periods) do
        if p.mode == 'hard' and PERIOD[p.period] then hard[#hard + 1] = {s, PERIOD[p.period], tonumber(p.limit_micros)} end
      end
    end
  end
end
if #hard == 0 then return {'ok', raw, count, ttl, worst, history, expired, ''} end

for _, c in ipairs(hard) do
  local field = scopes[c[1]][3]
  local spent = tonumber(redis.call('HGET', KEYS[1 + c[2]], field) or '0')
  local held = math.max(0, tonumber(redis.call('HGET', KEYS[4 + c[2]], field) or '0'))
  if spent + held + worst > c[3] then
    return {'over', raw, count, ttl, worst, history, expired, c[1], c[2], spent, held, c[3]}
  end
end
if worst == 0 then return {'ok', raw, count, ttl, worst, history, expired, ''} end

local cells = {}
for _, c in ipairs(hard) do
  local key = KEYS[4 + c[2]]
  redis.call('HINCRBY', key, scopes[c[1]][3], string.format('%.0f', worst))
  redis.call('PEXPIREAT', key, ARGV[14 + c[2]])
  cells[#cells + 1] = key .. '\t' .. scopes[c[1]][3]
end
redis.call('HSET', KEYS[9], 'amt', string.format('%.0f', worst), 'cells', table.concat(cells, '\n'), 'settled', 0, 'expect', -1)
redis.call('PEXPIREAT', KEYS[9], tonumber(ARGV[9]) + 86400000)
redis.call('ZADD', KEYS[8], ARGV[9], ARGV[8])
return {'ok', raw, count, ttl, worst, history, expired, ARGV[8]}
