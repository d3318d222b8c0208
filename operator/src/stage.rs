//! The three inventory stages and what each one needs from the cluster: which stores, whether a
//! worker Deployment runs beside the API, and whether leaving it needs a drain.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How booking-app decides a booking (booking-app's `--stage` / `STAGE`).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// One Postgres transaction per booking, inventory row locked.
    Postgres,
    /// Lua counter in Redis, bookings written behind to Postgres by a syncer.
    Redis,
    /// Requests queued in Kafka, decided in order by consumer workers.
    Kafka,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Postgres, Stage::Redis, Stage::Kafka];

    /// The value booking-app expects in `STAGE` and `--stage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Postgres => "postgres",
            Stage::Redis => "redis",
            Stage::Kafka => "kafka",
        }
    }

    pub fn uses_redis(self) -> bool {
        self == Stage::Redis
    }

    pub fn uses_kafka(self) -> bool {
        self == Stage::Kafka
    }

    /// Stages whose bookings are decided or persisted by a separate `booking-app worker`:
    /// the kafka consumer group and the redis write-behind syncer.
    pub fn has_worker(self) -> bool {
        matches!(self, Stage::Redis | Stage::Kafka)
    }

    /// Stages that hold accepted work outside Postgres (the redis stream not yet written behind,
    /// the kafka requests not yet decided). Leaving such a stage must wait until that backlog is
    /// empty, or the next stage would read a Postgres that misses bookings.
    pub fn needs_drain(self) -> bool {
        self.has_worker()
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_names_are_what_booking_app_parses() {
        for stage in Stage::ALL {
            let json = serde_json::to_value(stage).unwrap();
            assert_eq!(json, serde_json::Value::String(stage.as_str().into()));
        }
    }

    #[test]
    fn only_async_stages_need_a_worker_and_a_drain() {
        assert!(!Stage::Postgres.has_worker() && !Stage::Postgres.needs_drain());
        assert!(Stage::Redis.has_worker() && Stage::Redis.needs_drain());
        assert!(Stage::Kafka.has_worker() && Stage::Kafka.needs_drain());
    }
}
