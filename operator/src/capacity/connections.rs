//! Postgres connection budget: how many connections each pod's pool may open so that all pools
//! together fit in `max_connections`, with room for a rolling update and for administrators.

/// Postgres keeps `superuser_reserved_connections` (3 by default) for superusers; we keep 7 more
/// for the operator, migrations and a person with psql during an incident.
pub const RESERVED_CONNECTIONS: u32 = 10;

/// During a rolling update old and new pods hold pools at once: the Deployment's `maxSurge`
/// (the Kubernetes default, 25%) must fit too, or the rollout itself exhausts Postgres.
pub const ROLLOUT_SURGE_PERCENT: u32 = 25;

/// Postgres' own default; the operator never configures fewer.
pub const POSTGRES_DEFAULT_MAX_CONNECTIONS: u32 = 100;

/// The largest `max_connections` the operator sets unless the spec says otherwise: every backend
/// is a process with its own memory, and beyond ~1000 a pooler (PgBouncer) is the better answer.
pub const DEFAULT_MAX_CONNECTIONS_CEILING: u32 = 1000;

/// Every pod that holds a pool: booking-app's API pods at their most (maxReplicas, so scaling
/// never changes the pool and never rolls the pods) plus the workers. booking-app gives every
/// process one `DB_POOL_SIZE`, so one pool size serves them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionRequest {
    pub pods: u32,
    /// Connections each pod would like in its pool.
    pub pool: u32,
    /// The largest `max_connections` Postgres may be given.
    pub ceiling: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// Every pool got what it asked for.
    Fits,
    /// The ceiling forced smaller pools than `wanted`.
    PoolShrunk { wanted: u32 },
    /// Even one connection per pod does not fit: `needed` is what that would take.
    Exhausted { needed: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPlan {
    /// To configure on Postgres.
    pub max_connections: u32,
    /// Pool size of each pod (`DB_POOL_SIZE`).
    pub pool: u32,
    /// Connections the pools may hold with every pod running.
    pub in_use: u64,
    /// At the peak of a rolling update, plus the reserved ones.
    pub peak: u64,
    pub limit: ConnectionLimit,
}

impl ConnectionPlan {
    /// CamelCase reason for a condition.
    pub fn reason(&self) -> &'static str {
        match self.limit {
            ConnectionLimit::Fits => "ConnectionsFit",
            ConnectionLimit::PoolShrunk { .. } => "PoolShrunk",
            ConnectionLimit::Exhausted { .. } => "ConnectionsExhausted",
        }
    }

    pub fn message(&self) -> String {
        match self.limit {
            ConnectionLimit::Fits => format!(
                "max_connections {} holds pools of {} ({} connections, {} during a rollout, reserve included)",
                self.max_connections, self.pool, self.in_use, self.peak
            ),
            ConnectionLimit::PoolShrunk { wanted } => format!(
                "pools shrunk from {wanted} to {} connections per pod to fit max_connections {}",
                self.pool, self.max_connections
            ),
            ConnectionLimit::Exhausted { needed } => format!(
                "even 1 connection per pod needs {needed} connections, above max_connections {}: \
                 put a pooler in front of Postgres, use a later stage, or lower maxReplicas",
                self.max_connections
            ),
        }
    }
}

/// Pods alive at the peak of a rolling update.
fn with_surge(pods: u32) -> u64 {
    let pods = u64::from(pods);
    pods + (pods * u64::from(ROLLOUT_SURGE_PERCENT)).div_ceil(100)
}

/// Sizes `max_connections` and the pool so that every pod's pool, through a rollout, fits.
pub fn plan_connections(request: &ConnectionRequest) -> ConnectionPlan {
    let pods = with_surge(request.pods);
    let reserved = u64::from(RESERVED_CONNECTIONS);
    // Saturating: a u32 pool times a u32 pod count with surge can exceed u64.
    let peak_for = |pool: u32| {
        pods.saturating_mul(u64::from(pool))
            .saturating_add(reserved)
    };
    let in_use_for = |pool: u32| u64::from(request.pods) * u64::from(pool);
    let ceiling = u64::from(request.ceiling);
    let floor = u64::from(POSTGRES_DEFAULT_MAX_CONNECTIONS).min(ceiling);

    let wanted_peak = peak_for(request.pool);
    if wanted_peak <= ceiling {
        return ConnectionPlan {
            max_connections: to_u32(wanted_peak.max(floor)),
            pool: request.pool,
            in_use: in_use_for(request.pool),
            peak: wanted_peak,
            limit: ConnectionLimit::Fits,
        };
    }
    let shrunk = ceiling.saturating_sub(reserved) / pods.max(1);
    let (pool, limit) = if shrunk >= 1 {
        (
            to_u32(shrunk),
            ConnectionLimit::PoolShrunk {
                wanted: request.pool,
            },
        )
    } else {
        (
            1,
            ConnectionLimit::Exhausted {
                needed: peak_for(1),
            },
        )
    };
    ConnectionPlan {
        max_connections: request.ceiling,
        pool,
        in_use: in_use_for(pool),
        peak: peak_for(pool),
        limit,
    }
}

fn to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pods: u32, pool: u32) -> ConnectionRequest {
        ConnectionRequest {
            pods,
            pool,
            ceiling: 1000,
        }
    }

    #[test]
    fn small_sale_keeps_the_postgres_default() {
        let plan = plan_connections(&request(2, 10));
        assert_eq!(plan.limit, ConnectionLimit::Fits);
        assert_eq!(plan.max_connections, POSTGRES_DEFAULT_MAX_CONNECTIONS);
        assert_eq!((plan.pool, plan.in_use), (10, 20));
        // 2 pods + 1 surge pod, 10 each, plus the reserved ones.
        assert_eq!(plan.peak, 30 + u64::from(RESERVED_CONNECTIONS));
    }

    #[test]
    fn pools_through_a_rollout_plus_reserved_fit_in_max_connections() {
        let plan = plan_connections(&request(44, 10));
        assert_eq!(plan.limit, ConnectionLimit::Fits);
        // 44 pods → 55 at the peak of a rollout.
        assert_eq!(plan.peak, 55 * 10 + 10);
        assert_eq!(u64::from(plan.max_connections), plan.peak);
        assert_eq!(plan.in_use, 440);
        assert!(plan.in_use + u64::from(RESERVED_CONNECTIONS) <= u64::from(plan.max_connections));
        assert!(
            plan.message().contains("max_connections 560"),
            "{}",
            plan.message()
        );
    }

    #[test]
    fn ceiling_shrinks_pools_but_keeps_the_reserve() {
        let plan = plan_connections(&request(358, 16));
        assert_eq!(plan.limit, ConnectionLimit::PoolShrunk { wanted: 16 });
        assert_eq!(plan.max_connections, 1000);
        // 358 pods → 448 at the peak; (1000 - 10) / 448 = 2.
        assert_eq!(plan.pool, 2);
        assert!(plan.peak <= 1000, "{plan:?}");
        assert_eq!(plan.reason(), "PoolShrunk");
    }

    #[test]
    fn too_many_pods_for_one_connection_each_is_reported_not_hidden() {
        let plan = plan_connections(&request(2000, 10));
        assert_eq!(plan.limit, ConnectionLimit::Exhausted { needed: 2500 + 10 });
        assert_eq!((plan.pool, plan.max_connections), (1, 1000));
        assert!(plan.message().contains("pooler"));
    }

    #[test]
    fn huge_pod_counts_do_not_overflow() {
        let plan = plan_connections(&ConnectionRequest {
            pods: u32::MAX,
            pool: u32::MAX,
            ceiling: u32::MAX,
        });
        assert!(matches!(
            plan.limit,
            ConnectionLimit::PoolShrunk { .. } | ConnectionLimit::Exhausted { .. }
        ));
        assert_eq!(plan.max_connections, u32::MAX);
        assert!(
            plan.peak <= u64::from(u32::MAX)
                || matches!(plan.limit, ConnectionLimit::Exhausted { .. })
        );
    }

    #[test]
    fn pods_without_a_pool_need_only_the_reserve() {
        let plan = plan_connections(&request(100, 0));
        assert_eq!(
            (plan.limit, plan.in_use, plan.max_connections),
            (ConnectionLimit::Fits, 0, 100)
        );
        let low_ceiling = plan_connections(&ConnectionRequest {
            ceiling: 50,
            ..request(1, 4)
        });
        assert_eq!(
            low_ceiling.max_connections, 50,
            "the ceiling wins over the Postgres default"
        );
    }
}
