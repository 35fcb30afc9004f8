-- Everything a request must pass before it is served, in one round trip: the key (by its hash,
-- or the operator's record passed in), its scope, the per-key rate limit (a fixed window) and,
-- for paid work, the hard-budget blocks of the key's user, project and the global scope. Block
-- keys come from templates the gateway builds with alertingKeys(), so the key format has one
-- definition.
-- KEYS: 1 the key record (by hash)
-- ARGV: 1 inline record ('' to read KEYS[1]), 2 scope, 3 rate key prefix, 4 window ms, 5 limit,
--       6 periods (n), then n period names, then block templates for user, project, global
--       ({ID} and {PERIOD} are replaced)
-- Returns: {'unknown'} | {'forbidden', record} | {'rate_limited' or 'ok', record, count, ttl ms}
--          | {'blocked', record, count, ttl ms, index of the block (scope * n + period), block JSON}
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
local rate = ARGV[3] .. rec.key_id
local count = redis.call('INCR', rate)
local ttl = redis.call('PTTL', rate)
if ttl < 0 then
  redis.call('PEXPIRE', rate, ARGV[4])
  ttl = tonumber(ARGV[4])
end
if count > tonumber(ARGV[5]) then return {'rate_limited', raw, count, ttl} end
local n = tonumber(ARGV[6])
local ids = {rec.user_id, rec.project_id, 'global'}
for s = 1, 3 do
  local id = string.gsub(tostring(ids[s]), '%%', '%%%%')
  for p = 1, n do
    local period = string.gsub(ARGV[6 + p], '%%', '%%%%')
    local key = string.gsub(string.gsub(ARGV[6 + n + s], '{ID}', id), '{PERIOD}', period)
    local block = redis.call('GET', key)
    if block then return {'blocked', raw, count, ttl, (s - 1) * n + p - 1, block} end
  end
end
return {'ok', raw, count, ttl}
