-- Stores one response's changes to a session as one atomic change.
-- KEYS[1]  the session's key
-- ARGV[1]  'create' (a new sid: the key must not exist) or
--          'update' (an existing session: applied only if it still exists)
-- ARGV[2]  idle timeout, ms
-- ARGV[3]  absolute timeout, ms
-- ARGV[4]  the largest session, in bytes of its X-Session text ('update' only)
-- ARGV[5]  creation time, ms since the epoch ('create'; empty means now)
-- ARGV[6]  'peek': answer a stored change with the session as it now is
--          (the writer's cache keeps it), else ''
-- ARGV[7..] field, value pairs: a value is JSON text; an empty value deletes
-- Returns 'ok' (with 'peek': 'ok:' and state(KEYS[1]), state.lua), 'gone'
-- (no such session, or past its absolute deadline), 'exists' (create over an
-- existing key) or 'too_large:<bytes>'.
local key = KEYS[1]
local mode = ARGV[1]
local exists = redis.call('EXISTS', key) == 1
if mode == 'update' and not exists then
  return 'gone'
end
if mode == 'create' and exists then
  return 'exists'
end

local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

-- The length of a key as a JSON string in sessiongate's ASCII encoding: what
-- serde_json writes, with non-ASCII characters as \uXXXX (12 above U+FFFF).
local function json_len(s)
  local n = 2
  for i = 1, #s do
    local b = string.byte(s, i)
    if b == 34 or b == 92 or b == 8 or b == 9 or b == 10 or b == 12 or b == 13 then
      n = n + 2
    elseif b < 32 or b == 127 then
      n = n + 6
    elseif b < 128 then
      n = n + 1
    elseif b >= 240 then
      n = n + 12
    elseif b >= 192 then
      n = n + 6
    end
  end
  return n
end

local created
if mode == 'update' then
  -- The session as it will be, to check its size before changing anything.
  local current = redis.call('HGETALL', key)
  local merged = {}
  for i = 1, #current, 2 do
    if current[i] == '__created' then
      created = tonumber(current[i + 1])
    end
    merged[current[i]] = current[i + 1]
  end
  for i = 7, #ARGV, 2 do
    if ARGV[i + 1] == '' then
      merged[ARGV[i]] = nil
    else
      merged[ARGV[i]] = ARGV[i + 1]
    end
  end
  local size, count = 2, 0
  for field, value in pairs(merged) do
    if string.sub(field, 1, 2) ~= '__' then
      size = size + json_len(field) + 1 + #value
      count = count + 1
    end
  end
  if count > 1 then
    size = size + count - 1
  end
  if size > tonumber(ARGV[4]) then
    return 'too_large:' .. size
  end
else
  created = tonumber(ARGV[5]) or now
end

local ttl = created and math.min(tonumber(ARGV[2]), created + tonumber(ARGV[3]) - now)
if not ttl or ttl <= 0 then
  redis.call('DEL', key)
  return 'gone'
end

if mode == 'create' then
  redis.call('HSET', key, '__created', string.format('%d', created))
end
-- One call per field: a change set of any size stays within Lua's stack.
for i = 7, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', key, ARGV[i])
  else
    redis.call('HSET', key, ARGV[i], ARGV[i + 1])
  end
end
-- An update that deleted every field leaves the metadata, so the key lives on.
redis.call('PEXPIRE', key, ttl)
if ARGV[6] == 'peek' then
  return 'ok:' .. state(key)
end
return 'ok'
