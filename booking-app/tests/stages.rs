//! The shared stage suite (`tests/suite/`), instantiated for every stage. A stage joins by adding
//! one `stage_suite!` line; its worker, if any, is started by the harness (`tests/common`).

mod common;
mod suite;

stage_suite!(postgres, Stage::Postgres);
// Stage redis and stage kafka add themselves here when they exist:
stage_suite!(redis, Stage::Redis);
stage_suite!(kafka, Stage::Kafka);
