-- One user's index of bound sessions (SPEC §12): a ZSET of sids, each
-- scored by its session's absolute deadline (ms since the epoch). Every
-- call prunes the entries past their deadline (with a grace for clocks that
-- differ between Cluster nodes) and sets the key's expiry to follow its
-- longest entry, so the index never lacks a TTL.
-- KEYS[1]  the index key, <key_prefix>user:<id>
-- ARGV[1]  'add' | 'remove' | 'read'
-- ARGV[2]  the grace, ms
-- ARGV[3], ARGV[4]  'add': the sid and its session's absolute deadline, ms
-- ARGV[3..]         'remove': the sids to drop
-- Returns 'read': the sids, earliest deadline first; else the entries left.
local key = KEYS[1]
local mode = ARGV[1]
local grace = tonumber(ARGV[2])
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%d', now - grace))
if mode == 'add' then
  redis.call('ZADD', key, ARGV[4], ARGV[3])
elseif mode == 'remove' then
  for i = 3, #ARGV do
    redis.call('ZREM', key, ARGV[i])
  end
end
-- An empty ZSET is no key at all; else the key lives as long as its last entry.
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if #last == 0 then
  if mode == 'read' then
    return {}
  end
  return 0
end
redis.call('PEXPIREAT', key, math.floor(tonumber(last[2])) + grace)
if mode == 'read' then
  return redis.call('ZRANGE', key, 0, -1)
end
return redis.call('ZCARD', key)
