//! The three inventory stages and what each one needs: which stores, whether a worker runs
//! beside the API, and whether leaving it needs a drain.

use serde::{Deserialize, Serialize};

/// How booking-app decides a booking (booking-app's `--stage` / `STAGE`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Postgres decides under the inventory row's lock (`FOR UPDATE`): one transaction per batch
    /// of an event's waiting bookings, or per booking (`POSTGRES_DECIDE`).
    Postgres,
    /// A Lua script in Redis decides; a syncer writes behind to Postgres.
    Redis,
    /// Requests are queued in Kafka and decided in order by workers.
    Kafka,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Postgres, Stage::Redis, Stage::Kafka];

    /// The value of `STAGE` and `--stage` (and of the serialized form).
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
    fn serialized_names_are_the_setting_values() {
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
