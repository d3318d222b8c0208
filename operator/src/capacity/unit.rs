//! What a sized sale implies beyond its API pods: workers, each pod's Postgres pool,
//! `max_connections` and Kafka partitions; and the roadmap's unit-capacity table that
//! `flashsale-operator plan` prints. The reconciler and `plan` call the same functions.

use std::fmt::Write as _;

use super::queue::QueuePlan;
use super::{
    ConnectionPlan, ConnectionRequest, DEFAULT_PARTITIONS, ReplicaPlan, SizingLimit,
    kafka_partitions, plan_connections, whole,
};
use flashsale_contract::Stage;

/// Pool each pod asks for when the spec does not pin one. Stage postgres holds a connection
/// for every booking in flight (16 is booking-app's default and where the hot-row transaction
/// peaked in pgbench); the later stages touch Postgres off the booking path, so 4 do.
pub fn default_pool(stage: Stage) -> u32 {
    match stage {
        Stage::Postgres => 16,
        Stage::Redis | Stage::Kafka => 4,
    }
}

/// The largest default pool of any stage: what `max_connections` is budgeted for.
const LARGEST_DEFAULT_POOL: u32 = 16;

/// Inputs of the derived sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DerivedRequest {
    pub stage: Stage,
    /// API pods the pools are sized for: the sale's maxReplicas, so scaling never changes a
    /// pool (which would roll every pod) nor `max_connections` (which would restart Postgres).
    pub api_pods: u32,
    /// Worker pods of this stage.
    pub workers: u32,
    /// The most worker pods any stage runs (the spec's pin, else 1): `max_connections` is
    /// budgeted for it so it stays the same across stages.
    pub workers_any_stage: u32,
    pub pinned_pool: Option<u32>,
    pub pinned_partitions: Option<u32>,
    pub max_connections_ceiling: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Derived {
    pub connections: ConnectionPlan,
    /// Partitions of the request topic; `None` outside stage kafka.
    pub partitions: Option<u32>,
}

/// `max_connections` depends on maxReplicas, the workers and a pinned pool only, never on the
/// stage or the current replica count: changing it restarts Postgres, which a stage change or
/// a scale-up in the middle of a sale must not do. The stage's pools are divided out of it.
pub fn derive(request: &DerivedRequest) -> Derived {
    let budget = plan_connections(&ConnectionRequest {
        pods: request
            .api_pods
            .saturating_add(request.workers_any_stage.max(request.workers)),
        pool: request.pinned_pool.unwrap_or(LARGEST_DEFAULT_POOL),
        ceiling: request.max_connections_ceiling,
    });
    let stage = plan_connections(&ConnectionRequest {
        pods: request.api_pods.saturating_add(request.workers),
        pool: request
            .pinned_pool
            .unwrap_or_else(|| default_pool(request.stage)),
        ceiling: budget.max_connections,
    });
    let connections = ConnectionPlan {
        max_connections: budget.max_connections,
        ..stage
    };
    let partitions = request.stage.uses_kafka().then(|| {
        kafka_partitions(
            request.workers,
            request.pinned_partitions.unwrap_or(DEFAULT_PARTITIONS),
        )
    });
    Derived {
        connections,
        partitions,
    }
}

/// The unit-capacity table: one measured pod, multiplied out to the target.
pub fn table(
    stage: Stage,
    api: &ReplicaPlan,
    queue: Option<&QueuePlan>,
    derived: &Derived,
) -> String {
    let mut out = String::new();
    let util = api.utilization * 100.0;
    let per_pod_planned = api.per_pod_rps * api.utilization;
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "Unit capacity plan: {} rps at stage {stage}",
        api.target_rps
    );
    let _ = writeln!(
        out,
        "one booking-app pod sustains {} rps; planned at {util:.0}% utilization: {} rps per pod\n",
        api.per_pod_rps, per_pod_planned
    );
    let mut row = |what: &str, value: String, why: String| {
        let _ = writeln!(out, "  {what:<26} {value:>10}   {why}");
    };
    let bounds = match api.limit {
        SizingLimit::Computed => String::new(),
        SizingLimit::ClampedByMin | SizingLimit::ClampedByMax => format!("; {}", api.message()),
    };
    row(
        "booking-app instances",
        api.replicas.to_string(),
        format!(
            "ceil({} / ({} x {:.2})) = {}{bounds}",
            api.target_rps, api.per_pod_rps, api.utilization, api.required
        ),
    );
    row(
        "  serving",
        whole(api.planned_rps()).to_string(),
        format!("rps planned, {} rps flat out", whole(api.saturation_rps())),
    );
    match (stage.has_worker(), queue) {
        (false, _) => row(
            "workers",
            "-".into(),
            format!("stage {stage} decides in the API pods"),
        ),
        (true, Some(q)) => row("workers", q.workers.to_string(), q.message()),
        (true, None) if stage.uses_kafka() => {
            row(
                "workers",
                "1".into(),
                "drain rate not measured (--drain-rps): one worker".into(),
            );
        }
        (true, None) => row("workers", "1".into(), "one write-behind syncer".into()),
    }
    let c = &derived.connections;
    row("DB pool per pod", c.pool.to_string(), c.message());
    row(
        "Postgres max_connections",
        c.max_connections.to_string(),
        format!(
            "{} at the peak of a rollout, {} reserved",
            c.peak,
            super::RESERVED_CONNECTIONS
        ),
    );
    match derived.partitions {
        Some(p) => row(
            "Kafka partitions",
            p.to_string(),
            "at least one per worker".into(),
        ),
        None => row("Kafka partitions", "-".into(), "stage kafka only".into()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{SizingRequest, size_replicas};

    fn request(stage: Stage, api_pods: u32, workers: u32) -> DerivedRequest {
        DerivedRequest {
            stage,
            api_pods,
            workers,
            workers_any_stage: 1,
            pinned_pool: None,
            pinned_partitions: None,
            max_connections_ceiling: super::super::DEFAULT_MAX_CONNECTIONS_CEILING,
        }
    }

    #[test]
    fn pools_are_sized_for_every_pod_including_workers() {
        let derived = derive(&request(Stage::Redis, 20, 2));
        // 22 pods → 28 in a rollout, 4 each, + 10 reserved.
        assert_eq!(
            (derived.connections.pool, derived.connections.peak),
            (4, 28 * 4 + 10)
        );
        assert!(derived.connections.peak <= u64::from(derived.connections.max_connections));
        assert_eq!(derived.partitions, None);
    }

    #[test]
    fn changing_the_stage_keeps_max_connections_so_postgres_does_not_restart() {
        let all: Vec<u32> = [(Stage::Postgres, 0), (Stage::Redis, 1), (Stage::Kafka, 1)]
            .into_iter()
            .map(|(stage, workers)| {
                derive(&request(stage, 30, workers))
                    .connections
                    .max_connections
            })
            .collect();
        assert_eq!(all, vec![all[0]; 3]);
        // 31 pods → 39 in a rollout, budgeted at 16 each, + 10 reserved.
        assert_eq!(all[0], 39 * 16 + 10);
    }

    #[test]
    fn stage_postgres_wants_bigger_pools_and_shrinks_them_to_fit() {
        let derived = derive(&request(Stage::Postgres, 100, 0));
        assert_eq!(derived.connections.pool, 7, "(1000 - 10) / 125");
        assert!(derived.connections.peak <= 1000);
        let pinned = derive(&DerivedRequest {
            pinned_pool: Some(3),
            ..request(Stage::Postgres, 100, 0)
        });
        assert_eq!(pinned.connections.pool, 3);
    }

    #[test]
    fn kafka_partitions_cover_the_workers() {
        assert_eq!(derive(&request(Stage::Kafka, 10, 9)).partitions, Some(9));
        assert_eq!(
            derive(&request(Stage::Kafka, 10, 1)).partitions,
            Some(DEFAULT_PARTITIONS)
        );
        let pinned = DerivedRequest {
            pinned_partitions: Some(3),
            ..request(Stage::Kafka, 10, 5)
        };
        assert_eq!(
            derive(&pinned).partitions,
            Some(5),
            "a pin below the workers is raised"
        );
    }

    #[test]
    fn roadmap_table_for_one_million_rps() {
        let api = size_replicas(&SizingRequest {
            target_rps: 1_000_000,
            per_pod_rps: Some(4000.0),
            utilization: 0.7,
            min_replicas: 1,
            max_replicas: super::super::MAX_REPLICAS,
        })
        .unwrap();
        let derived = derive(&request(Stage::Postgres, api.replicas, 0));
        let text = table(Stage::Postgres, &api, None, &derived);
        let value = |what: &str| {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(what))
                .unwrap_or_else(|| panic!("{what}: {text}"));
            line[line.find(what).unwrap() + what.len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(value("booking-app instances"), "358", "{text}");
        assert!(
            text.contains("ceil(1000000 / (4000 x 0.70)) = 358"),
            "{text}"
        );
        assert_eq!(value("serving"), "1002400", "{text}");
        assert_eq!(value("DB pool per pod"), "2", "{text}");
        assert_eq!(value("Postgres max_connections"), "1000", "{text}");
        assert_eq!(value("Kafka partitions"), "-", "{text}");
    }
}
