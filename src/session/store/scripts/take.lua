-- Takes a session out of the store: returns its fields and values (metadata
-- included) in load.lua's encoding, <length>:<bytes> each, and deletes it,
-- atomically; an empty string when there is none. Used by rotate: once
-- taken, the old sid is dead.
-- KEYS[1]  the session's key
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return ''
end
redis.call('DEL', KEYS[1])
for i = 1, #fields do
  fields[i] = #fields[i] .. ':' .. fields[i]
end
return table.concat(fields)
