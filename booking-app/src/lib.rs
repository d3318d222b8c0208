//! booking-app: the flash-sale booking service (HTTP API over three inventory stages), its
//! background workers, and loadgen, the load generator that also calibrates pods for the operator.

pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod duration;
pub mod http;
pub mod loadgen;
pub mod metrics;
pub mod server;
pub mod stage;
pub mod telemetry;
pub mod validation;
pub mod worker;
