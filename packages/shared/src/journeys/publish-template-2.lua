-- Publishes the next version of a template: versions are numbered here, so two admins publishing
-- at once get two versions, never one overwritten.
-- KEYS: 1 the template's hash (latest, and one JSON per version), 2 the set of template keys
-- ARGV: 1 template key, 2 the template JSON with the string "__VERSION__" where its version goes,
--       3 '1' to publish only when the template has no version yet (start-up seeding)
-- Returns: the new version number, or 0 when ARGV[3] held it back
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[1], 'latest') == 1 then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'latest', 1)
local doc = string.gsub(ARGV[2], '"__VERSION__"', tostring(v))
redis.call('HSET', KEYS[1], tostring(v), doc)
redis.call('SADD', KEYS[2], ARGV[1])
return v
