-- Stage postgres's per-booking transaction for pgbench, statement for statement as
-- booking-app/src/stage/postgres.rs sends it for a request with an Idempotency-Key (the loadgen
-- default) on an event with no per-user limit: the key lookup, then BEGIN; the inventory row
-- locked FOR UPDATE; the three writes in one statement; COMMIT. Keep it in step with that file.
-- hack/bench/references.sh runs it with `pgbench -M prepared -D event=<uuid> -D run=<id>`, on an
-- event too large to sell out; like loadgen's, every booking is a new user's, for one ticket.
\set user random(0, 999999999)
\set n random(1, 1000000000000)
SELECT id, event_id, user_id, quantity, status, reason, created_at FROM bookings WHERE idempotency_key = :run::text || '-' || :client_id::text || '-' || :n::text;
BEGIN;
SELECT remaining, per_user_limit FROM events WHERE id = :event::uuid FOR UPDATE;
WITH booking AS (INSERT INTO bookings (id, event_id, user_id, quantity, status, idempotency_key, decided_at) VALUES (gen_random_uuid(), :event::uuid, 'user-' || :user::text, 1, 'confirmed', :run::text || '-' || :client_id::text || '-' || :n::text, now()) RETURNING created_at), inventory AS (UPDATE events SET remaining = remaining - 1 WHERE id = :event::uuid), holding AS (INSERT INTO holdings (event_id, user_id, quantity) VALUES (:event::uuid, 'user-' || :user::text, 1) ON CONFLICT (event_id, user_id) DO UPDATE SET quantity = holdings.quantity + EXCLUDED.quantity) SELECT created_at FROM booking;
COMMIT;
