-- Publishes the next version of a template: versions are numbered here, so two admins publishing
-- at once get two versions, never one overwritten.
-- KEYS: 1 the template's hash (latest, and one JSON per version), 2 the set of template keys
-- ARGV: 1 template key, 2 the template as a JSON object without its version (which goes in front),
--       3 '1' to publish only when the template has no version yet (start-up seeding)
-- Returns: the new version number, or 0 when ARGV[3] held it back
if ARGV[3] == '1' and redis.call('HEXISTS', KEYS[1], 'latest') == 1 then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'latest', 1)
local doc = '{"version":' .. v .. ',' .. string.sub(ARGV[2], 2)
redis.call('HSET', KEYS[1], tostring(v), doc)
redis.call('SADD', KEYS[2], ARGV[1])
return v
