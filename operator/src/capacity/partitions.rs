//! Kafka partitions for the stage-kafka request topic: one consumer per partition at most, so the
//! topic needs at least as many partitions as workers the sale may run.

/// Partitions when neither the spec nor the workers ask for more: room to add workers later
/// without repartitioning (adding partitions moves keys, which breaks per-key order in flight).
pub const DEFAULT_PARTITIONS: u32 = 6;

/// At least one partition per worker, and at least `at_least` (the spec's pin, else
/// `DEFAULT_PARTITIONS`): a pin below the worker count would leave workers idle, so it is raised.
pub fn kafka_partitions(workers: u32, at_least: u32) -> u32 {
    workers.max(at_least).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_one_partition_per_worker() {
        assert_eq!(kafka_partitions(12, DEFAULT_PARTITIONS), 12);
        assert_eq!(kafka_partitions(0, 0), 1);
    }

    #[test]
    fn the_floor_leaves_room_to_add_workers() {
        assert_eq!(kafka_partitions(1, DEFAULT_PARTITIONS), 6);
        assert_eq!(kafka_partitions(3, 16), 16);
    }
}
