-- The booking store shared by every stage. Stage postgres decides here directly; stage redis
-- writes its confirmed bookings behind into `bookings`; stage kafka's worker inserts each request
-- as it decides it. Never edit this file once committed: add a new migration instead.

CREATE TABLE events (
    id             uuid        PRIMARY KEY,
    name           text        NOT NULL CHECK (name <> ''),
    tickets        bigint      NOT NULL CHECK (tickets >= 0),
    -- The inventory row: stage postgres locks it FOR UPDATE for every booking.
    remaining      bigint      NOT NULL CHECK (remaining >= 0 AND remaining <= tickets),
    -- NULL: no per-user limit.
    per_user_limit integer     CHECK (per_user_limit IS NULL OR per_user_limit >= 1),
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bookings (
    id              uuid        PRIMARY KEY,
    event_id        uuid        NOT NULL REFERENCES events (id),
    user_id         text        NOT NULL CHECK (user_id <> ''),
    quantity        integer     NOT NULL CHECK (quantity >= 1),
    status          text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    -- Why a booking was rejected (sold_out, per_user_limit, ...); set exactly when rejected.
    reason          text,
    -- Client-chosen, unique across all events. The request it was first used with is the row's
    -- own (event_id, user_id, quantity): a reuse with a different request is detected by
    -- comparing those, so no separate fingerprint column can drift from them.
    idempotency_key text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    CHECK ((status = 'rejected') = (reason IS NOT NULL)),
    CHECK ((status = 'pending') = (decided_at IS NULL))
);

CREATE INDEX bookings_event_status_idx ON bookings (event_id, status);

-- Tickets each user holds per event (sum of their confirmed quantities), so the per-user limit
-- is one primary-key lookup under the event's row lock instead of a sum over bookings.
CREATE TABLE holdings (
    event_id uuid    NOT NULL REFERENCES events (id),
    user_id  text    NOT NULL,
    quantity integer NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (event_id, user_id)
);
