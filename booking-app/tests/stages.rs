//! The shared stage suite (`tests/suite/`), instantiated for every stage. A stage joins by adding
//! one `stage_suite!` line; its worker, if any, is started by the harness (`tests/common`).

mod common;
mod suite;

// Stage postgres in both its forms: bookings of one event decided in batches (the default), and
// one transaction per booking.
stage_suite!(postgres, Stage::Postgres, crate::common::decide_in_batches);
stage_suite!(
    postgres_per_booking,
    Stage::Postgres,
    crate::common::decide_per_booking
);
// Stage redis and stage kafka add themselves here when they exist:
stage_suite!(redis, Stage::Redis);
stage_suite!(kafka, Stage::Kafka);
