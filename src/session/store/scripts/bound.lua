-- A session as the user index sees it (SPEC §12): only a session that
-- exists and is bound to the given user counts.
-- KEYS[1]  the session's key
-- ARGV[1]  'peek' | 'revoke'
-- ARGV[2]  the user id
-- Returns 'peek': '<created ms>:<ttl ms>', or '' when the session is gone
-- or bound to someone else; 'revoke': 1 if it was bound to the user and is
-- now deleted, else 0.
local meta = redis.call('HMGET', KEYS[1], '__created', '__user')
local bound = meta[1] and meta[2] == ARGV[2]
if ARGV[1] == 'peek' then
  if not bound then
    return ''
  end
  return meta[1] .. ':' .. redis.call('PTTL', KEYS[1])
end
if not bound then
  return 0
end
return redis.call('DEL', KEYS[1])
