-- Loads a session and pushes its expiry forward, in one round trip.
-- KEYS[1]  the session's key
-- ARGV[1]  idle timeout, ms
-- ARGV[2]  absolute timeout, ms
-- Returns the session's fields and values (metadata included) as one string,
-- each field and each value written as <length>:<bytes>; an empty string when
-- there is no live session. One string costs the client far less to read than
-- an array of them.
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return ''
end
local created
for i = 1, #fields, 2 do
  if fields[i] == '__created' then
    created = tonumber(fields[i + 1])
    break
  end
end
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- A hash without its creation time was not written by sessiongate: not a session.
local ttl = created and math.min(tonumber(ARGV[1]), created + tonumber(ARGV[2]) - now)
if not ttl or ttl <= 0 then
  redis.call('DEL', KEYS[1])
  return ''
end
redis.call('PEXPIRE', KEYS[1], ttl)
for i = 1, #fields do
  fields[i] = #fields[i] .. ':' .. fields[i]
end
return table.concat(fields)
