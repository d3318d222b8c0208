//! booking-app: the flash-sale booking service (HTTP API over three inventory stages), its
//! background workers, and loadgen, the load generator that also calibrates pods for the operator.

pub mod domain;
pub mod stage;
