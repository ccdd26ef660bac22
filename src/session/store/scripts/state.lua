-- The session at a key as the cache reads it (SPEC §11), without pushing its
-- expiry: '' when there is none; else its remaining life in ms (PTTL), a ':',
-- and its fields and values as load.lua returns them. Read by a connection
-- with tracking on in default mode, the key is tracked for it from here on.
-- (The start of peek.lua and save.lua, which call it.)
local function state(key)
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then
    return ''
  end
  local ttl = redis.call('PTTL', key)
  for i = 1, #fields do
    fields[i] = #fields[i] .. ':' .. fields[i]
  end
  return ttl .. ':' .. table.concat(fields)
end

