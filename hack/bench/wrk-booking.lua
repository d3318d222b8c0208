-- wrk script of `make bench` (hack/bench/wrk.sh): the independent client next to loadgen. Every
-- request is a booking of quantity 1 with an Idempotency-Key never used before, POSTed as JSON to
-- /events/<event>/bookings by one of the users of TOKENS_FILE in turn (line i: the bearer token
-- of user wrk-<i-1>, from `booking-app token --user wrk --count N`). Arguments (after `--`):
--   EVENT_ID RUN_PREFIX TOKENS_FILE
-- done() prints one JSON line on stdout: requests, seconds, req/s, latency percentiles (ms),
-- non-2xx answers and socket errors by kind.

local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("tid", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

-- tid is a global of each thread's Lua state, set by setup() above.
local path, prefix, n
local tokens = {}

function init(args)
  path = "/events/" .. (args[1] or "00000000-0000-4000-8000-000000000001") .. "/bookings"
  prefix = (args[2] or "wrk") .. "-" .. tid .. "-"
  n = 0
  for line in io.lines(args[3] or "wrk-tokens") do
    table.insert(tokens, line)
  end
end

local headers = { ["Content-Type"] = "application/json" }

function request()
  n = n + 1
  local user = n % #tokens
  headers["Idempotency-Key"] = prefix .. n
  headers["Authorization"] = "Bearer " .. tokens[user + 1]
  return wrk.format("POST", path, headers, '{"user_id":"wrk-' .. user .. '","quantity":1}')
end

function done(summary, latency, requests)
  local e = summary.errors
  local s = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"seconds":%.3f,"rps":%.1f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"non_2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
    summary.requests, s, summary.requests / s, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, e.status, e.connect, e.read, e.write, e.timeout))
end
