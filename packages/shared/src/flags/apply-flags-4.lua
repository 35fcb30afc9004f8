-- Applies one flag change: flags and segments written, the version bumped, one audit entry per
-- changed flag or segment appended, all in one step and only against the version the change was
-- computed from (so no change is half-applied and each entry's `before` is what it replaced).
-- KEYS: 1 flags (hash: name -> stored flag JSON), 2 segments (hash: id -> segment JSON),
--       3 version (integer), 4 history (stream of audit entries)
-- ARGV: 1 the version the change was computed from, 2 history cap (approximate MAXLEN),
--       3 F, then F pairs (flag name, JSON or '' to delete); then S, then S pairs (segment id,
--       JSON or ''); then H, then H audit entries (JSON)
-- Returns: the new version, or -1 when the version moved (nothing written).
if tonumber(redis.call('GET', KEYS[3]) or '0') ~= tonumber(ARGV[1]) then return -1 end
local i = 3
for k = 1, 2 do
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[k], ARGV[i]) else redis.call('HSET', KEYS[k], ARGV[i], ARGV[i + 1]) end
    i = i + 2
  end
end
local version = redis.call('INCR', KEYS[3])
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'version', version, 'entry', ARGV[i])
  i = i + 1
end
return version
