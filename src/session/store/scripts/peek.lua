-- Reads a session without pushing its expiry: the cache's read (SPEC §11),
-- whose touches push it at most once per touch_interval.
-- KEYS[1]  the session's key
-- Returns '' when there is no session; else its remaining life in ms (PTTL),
-- a ':', and its fields and values as load.lua returns them.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return ''
end
local ttl = redis.call('PTTL', KEYS[1])
for i = 1, #fields do
  fields[i] = #fields[i] .. ':' .. fields[i]
end
return ttl .. ':' .. table.concat(fields)
