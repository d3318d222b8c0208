-- Stage postgres's booking transaction for pgbench, statement for statement as
-- booking-app/src/stage/postgres.rs sends it for a request with an Idempotency-Key (the loadgen
-- default): the key lookup, then BEGIN; the inventory row locked FOR UPDATE; the three writes in
-- one statement; COMMIT. Keep it in step with that file. hack/bench.sh runs it with
-- `pgbench -M prepared -D event=<uuid> -D run=<id>`, on an event too large to sell out.
\set user random(0, 999999)
\set quantity random(1, 4)
\set n random(1, 1000000000000)
SELECT id, event_id, user_id, quantity, status, reason, created_at FROM bookings WHERE idempotency_key = :run::text || '-' || :client_id::text || '-' || :n::text;
BEGIN;
SELECT e.remaining, e.per_user_limit, COALESCE(h.quantity, 0) FROM events e LEFT JOIN holdings h ON h.event_id = e.id AND h.user_id = 'user-' || :user::text WHERE e.id = :event::uuid FOR UPDATE OF e;
WITH booking AS (INSERT INTO bookings (id, event_id, user_id, quantity, status, idempotency_key, decided_at) VALUES (gen_random_uuid(), :event::uuid, 'user-' || :user::text, :quantity::int, 'confirmed', :run::text || '-' || :client_id::text || '-' || :n::text, now()) RETURNING created_at), inventory AS (UPDATE events SET remaining = remaining - :quantity::int WHERE id = :event::uuid), holding AS (INSERT INTO holdings (event_id, user_id, quantity) VALUES (:event::uuid, 'user-' || :user::text, :quantity::int) ON CONFLICT (event_id, user_id) DO UPDATE SET quantity = holdings.quantity + EXCLUDED.quantity) SELECT created_at FROM booking;
COMMIT;
