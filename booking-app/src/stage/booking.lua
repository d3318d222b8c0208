-- booking.lua: decides one booking of stage redis, atomically inside Redis.
-- Redis runs it without interleaving any other command, and with `appendfsync always` its
-- effects are on disk before the caller reads the answer. That is why it is ONE script, claim
-- included: every round trip that writes waits for an fsync, so a booking is one round trip and
-- one fsync, keyed or not (a separate claim command cost keyed bookings a second fsync).
--
-- Keys and slots: KEYS[1..5] belong to one event and carry its `{event_id}` hash tag. KEYS[6],
-- the claim of an idempotency key, is global (keys are unique across events, as in Postgres) and
-- is tagged by the key itself, so a keyed call touches two slots: Redis Cluster would refuse it
-- (CROSSSLOT). Stage redis therefore assumes a single Redis primary (`REDIS_URL` names one
-- server). A call without a key passes only KEYS[1..5] and touches no claim.
--
-- KEYS[1] event hash (remaining, limit, ...)   KEYS[2] holdings hash (user -> tickets)
-- KEYS[3] idempotency hash (key -> confirmed answer)
-- KEYS[4] stream of decisions not yet in Postgres
-- KEYS[5] unsynced hash (booking id -> booking, for reads until the syncer has written it)
-- KEYS[6] only with a key: string, its claim: the event the key was first used for, and after a
--         refusal `<event id> <refusal JSON>`. It expires ARGV[7] seconds after the key's first
--         use (IDEMPOTENCY_RETENTION), and the refusal with it: Redis 7.0 cannot expire a hash
--         field, and refusals, unlike confirmations (at most one per ticket), have no bound.
-- ARGV[1] user id   ARGV[2] quantity (>= 1)   ARGV[3] idempotency key ('' for none)
-- ARGV[4] the booking as JSON, status confirmed (stored, replayed, streamed; a refusal stores a
--         copy with status and reason changed)   ARGV[5] the booking's id
-- ARGV[6] the event's id (the claim's value; 36 characters)
-- ARGV[7] the claim's time to live, seconds
--
-- Answers (arrays of strings, first element the verdict):
--   {'reused'}                             the key is bound to another event: nothing done
--   {'missing'}                            the event is not loaded: load it from Postgres, retry
--                                          (nothing claimed yet)
--   {'replay', answer}                     the key was used before: the first answer, unchanged
--   {'rejected', 'per_user_limit', held}   the user would hold more than the limit
--   {'rejected', 'sold_out', remaining}    fewer tickets left than asked for
--   {'confirmed', remaining}               booked; the stream entry is the syncer's work item

local event, holdings, idempotency, stream, unsynced = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local user, quantity, key, answer, booking_id = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local event_id, claim_ttl = ARGV[6], ARGV[7]

-- The event first: a key is claimed only for an event that exists (loaded here), so requests
-- naming made-up events cannot fill Redis with claims.
local inventory = redis.call('HMGET', event, 'remaining', 'limit')
if not inventory[1] then
  return {'missing'}
end

-- Then the key's claim: a key bound to another event is refused whatever this event's state.
-- The first use binds it for `claim_ttl`; later uses for the same event leave it (and its
-- expiry) as it is, and get the refusal it holds, if any. Once it has expired, the key is new.
if key ~= '' then
  local claim = KEYS[6]
  if not claim then
    return redis.error_reply('booking.lua: a call with an idempotency key needs its claim as KEYS[6]')
  end
  local bound = redis.call('GET', claim)
  if not bound then
    redis.call('SET', claim, event_id, 'EX', claim_ttl)
  elseif string.sub(bound, 1, #event_id) ~= event_id then
    return {'reused'}
  elseif #bound > #event_id then
    return {'replay', string.sub(bound, #event_id + 2)}
  end
end

if key ~= '' then
  local first = redis.call('HGET', idempotency, key)
  if first then
    return {'replay', first}
  end
end

-- A refusal changes no inventory. Without a key it is not kept; with one it is the key's first
-- answer, kept in the key's claim (expiring with it), and goes to Postgres through the stream
-- like a booking (as stage postgres stores it; Postgres deletes it after the same retention).
local function refuse(reason, count)
  if key ~= '' then
    local refused = cjson.decode(answer)
    refused['status'] = 'rejected'
    refused['reason'] = reason
    local encoded = cjson.encode(refused)
    redis.call('XADD', stream, '*', 'booking', encoded, 'key', key)
    redis.call('SET', KEYS[6], event_id .. ' ' .. encoded, 'KEEPTTL')
  end
  return {'rejected', reason, tostring(count)}
end

-- The user's limit first, then the stock: the same order as stage postgres.
local remaining, limit = tonumber(inventory[1]), tonumber(inventory[2])
local held = tonumber(redis.call('HGET', holdings, user) or '0')
if limit >= 0 and held + quantity > limit then
  return refuse('per_user_limit', held)
end
if remaining < quantity then
  return refuse('sold_out', remaining)
end

redis.call('HINCRBY', event, 'remaining', -quantity)
redis.call('HINCRBY', holdings, user, quantity)
redis.call('XADD', stream, '*', 'booking', answer, 'key', key)
redis.call('HSET', unsynced, booking_id, answer)
if key ~= '' then
  redis.call('HSET', idempotency, key, answer)
end
return {'confirmed', tostring(remaining - quantity)}
