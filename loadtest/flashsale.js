// loadtest/flashsale.js — the flash sale as a k6 test, for users who already script k6.
// The project's own instrument is `booking-app loadgen` (make bench, make demo, calibration);
// this script drives the same sale: create an event, many virtual users booking at once, checks
// on every answer, and after the sale a check that nothing was oversold.
//
//   make stress-k6 URL=http://127.0.0.1:8080 VUS=50 DURATION=30s TICKETS=5000
//   k6 run -e URL=... -e VUS=... loadtest/flashsale.js
//
// Environment: URL (booking-app base URL), VUS, DURATION, TICKETS, PER_USER_LIMIT (unset: no
// limit), USERS (distinct user ids), MAX_QUANTITY (each booking asks for 1..N), EVENT_ID (book an
// existing event instead of creating one).

import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';

const BASE = (__ENV.URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const TICKETS = parseInt(__ENV.TICKETS || '5000', 10);
const PER_USER_LIMIT = __ENV.PER_USER_LIMIT ? parseInt(__ENV.PER_USER_LIMIT, 10) : null;
const USERS = parseInt(__ENV.USERS || '100000', 10);
const MAX_QUANTITY = parseInt(__ENV.MAX_QUANTITY || '4', 10);
const JSON_HEADERS = { 'Content-Type': 'application/json' };

export const options = {
  scenarios: {
    sale: {
      executor: 'constant-vus',
      vus: parseInt(__ENV.VUS || '50', 10),
      duration: __ENV.DURATION || '30s',
    },
  },
  thresholds: {
    // Every answer must be one the API documents for a sale: 201, 202 or 409.
    checks: ['rate>0.99'],
    'http_req_duration{name:book}': ['p(99)<1000'],
  },
};

// 201 confirmed, 202 pending and 409 refused are all correct answers during a sale: k6 must not
// count a sold-out answer as a failed request.
const saleAnswers = http.expectedStatuses(201, 202, 409);

const ticketsConfirmed = new Counter('tickets_confirmed');
const bookingsPending = new Counter('bookings_pending');
const bookingsRefused = new Counter('bookings_refused');

export function setup() {
  if (__ENV.EVENT_ID) {
    const res = http.get(`${BASE}/events/${__ENV.EVENT_ID}`);
    if (res.status !== 200) fail(`GET event ${__ENV.EVENT_ID}: ${res.status} ${res.body}`);
    return { event: res.json() };
  }
  const body = { name: 'k6 flash sale', tickets: TICKETS };
  if (PER_USER_LIMIT !== null) body.per_user_limit = PER_USER_LIMIT;
  const res = http.post(`${BASE}/events`, JSON.stringify(body), { headers: JSON_HEADERS });
  if (res.status !== 201) fail(`POST /events: ${res.status} ${res.body}`);
  return { event: res.json() };
}

export default function (data) {
  const user = Math.floor(Math.random() * USERS);
  const quantity = 1 + Math.floor(Math.random() * MAX_QUANTITY);
  const res = http.post(
    `${BASE}/events/${data.event.id}/bookings`,
    JSON.stringify({ user_id: `k6-user-${user}`, quantity }),
    {
      // One key per attempt, as a client that may retry would send.
      headers: Object.assign({ 'Idempotency-Key': `k6-${__VU}-${__ITER}-${Date.now()}` }, JSON_HEADERS),
      responseCallback: saleAnswers,
      tags: { name: 'book' },
    },
  );
  check(res, {
    'answered 201, 202 or 409': (r) => r.status === 201 || r.status === 202 || r.status === 409,
    '201/202 carry the booking': (r) => (r.status !== 201 && r.status !== 202) || !!r.json('id'),
    '409 says sold_out or per_user_limit': (r) =>
      r.status !== 409 || ['sold_out', 'per_user_limit'].includes(r.json('error.code')),
  });
  if (res.status === 201) ticketsConfirmed.add(quantity);
  else if (res.status === 202) bookingsPending.add(1);
  else if (res.status === 409) bookingsRefused.add(1);
}

export function teardown(data) {
  const res = http.get(`${BASE}/events/${data.event.id}`);
  const event = res.status === 200 ? res.json() : null;
  check(event, {
    'event readable after the sale': (e) => e !== null,
    'not oversold (0 <= remaining <= tickets)': (e) => e !== null && e.remaining >= 0 && e.remaining <= e.tickets,
  });
  if (event !== null) {
    console.log(`event ${event.id}: ${event.tickets - event.remaining} of ${event.tickets} tickets sold`);
  }
}
