-- Takes a session out of the store: returns its fields and values as a flat
-- array (metadata included) and deletes it, atomically; an empty array when
-- there is none. Used by rotate: once taken, the old sid is dead.
-- KEYS[1]  the session's key
local fields = redis.call('HGETALL', KEYS[1])
if #fields > 0 then
  redis.call('DEL', KEYS[1])
end
return fields
