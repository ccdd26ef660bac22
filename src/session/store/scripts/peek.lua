-- Reads a session without pushing its expiry: the cache's read (SPEC §11),
-- whose touches push it at most once per touch_interval.
-- KEYS[1]  the session's key
-- Returns state(KEYS[1]) (state.lua).
return state(KEYS[1])
