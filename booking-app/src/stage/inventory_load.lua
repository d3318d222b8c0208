-- inventory_load.lua: puts one event's inventory into Redis unless it is already there (SET NX
-- for a whole event), so any number of concurrent loaders agree on one state and a booking
-- decided after the first load is never overwritten by a slower loader's older numbers.
--
-- KEYS[1] event hash   KEYS[2] holdings hash   KEYS[3] idempotency hash   KEYS[4] booking stream
-- ARGV[1] name  ARGV[2] tickets  ARGV[3] per-user limit (-1: none)  ARGV[4] created_at (RFC 3339)
-- ARGV[5] remaining  ARGV[6] syncer consumer group  ARGV[7] n, the number of holdings
-- then n pairs (user, tickets), then pairs (idempotency key, confirmed answer) up to the end
-- (the loader puts refusals back into their keys' claims, where the booking script keeps them).
-- Returns 1 when this call loaded the event, 0 when it was loaded already.

local event, holdings, idempotency, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', event) == 1 then
  return 0
end

-- Whatever is left of the other keys is older than the caller's rebuild, which counted both
-- Postgres and the unsynced stream entries: replace it.
redis.call('DEL', holdings, idempotency)
local n = tonumber(ARGV[7])
local i = 8
for _ = 1, n do
  redis.call('HSET', holdings, ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call('HSET', idempotency, ARGV[i], ARGV[i + 1])
  i = i + 2
end

-- The stream is never replaced: its entries are bookings Postgres may not have yet.
local created = redis.pcall('XGROUP', 'CREATE', stream, ARGV[6], '0', 'MKSTREAM')
if type(created) == 'table' and created.err and not string.find(created.err, 'BUSYGROUP') then
  return created
end

-- Written last: its presence is what tells the booking script the event is ready.
redis.call('HSET', event, 'name', ARGV[1], 'tickets', ARGV[2], 'limit', ARGV[3],
  'created_at', ARGV[4], 'remaining', ARGV[5])
return 1
