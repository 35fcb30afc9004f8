-- Included by the alert transitions (an @include line at their top), not run alone. Defines
-- notify(): writes the record, appends the notice to the alerts stream and indexes the alert by the
-- notice's stream id (milliseconds, then sequence), so the history lists alerts in exactly the
-- order they were sent. Returns the stream id.
local function notify(kRecord, kIndex, kScopeIndex, kStream, alertId, json, maxlen, ttl, kind, state, scope, scopeId)
  if tonumber(ttl) > 0 then redis.call('SET', kRecord, json, 'PX', ttl) else redis.call('SET', kRecord, json) end
  local id = redis.call('XADD', kStream, 'MAXLEN', '~', maxlen, '*',
    'kind', kind, 'state', state, 'scope', scope, 'scope_id', scopeId, 'alert_id', alertId, 'alert', json)
  local dash = string.find(id, '-', 1, true)
  local score = tonumber(string.sub(id, 1, dash - 1)) + math.min(tonumber(string.sub(id, dash + 1)), 999) / 1000
  redis.call('ZADD', kIndex, score, alertId)
  redis.call('ZADD', kScopeIndex, score, alertId)
  if redis.call('ZCARD', kIndex) > 10000 then redis.call('ZREMRANGEBYRANK', kIndex, 0, -10001) end
  if redis.call('ZCARD', kScopeIndex) > 2000 then redis.call('ZREMRANGEBYRANK', kScopeIndex, 0, -2001) end
  return id
end
