//! Names of every child object, derived from the FlashSale's name. One place, so the builders,
//! the status computation, the applier and the tests agree. The CRD limits the sale's name to 40
//! characters so the longest (`<sale>-booking-app-postgres`) stays a valid DNS label.

use flashsale_contract::Stage;

pub fn credentials_secret(sale: &str) -> String {
    format!("{sale}-credentials")
}

pub fn postgres(sale: &str) -> String {
    format!("{sale}-postgres")
}

pub fn redis(sale: &str) -> String {
    format!("{sale}-redis")
}

pub fn kafka(sale: &str) -> String {
    format!("{sale}-kafka")
}

/// The booking API Service; it selects the pods of the stage being served.
pub fn booking_service(sale: &str) -> String {
    format!("{sale}-booking-app")
}

/// One booking-app Deployment per stage, so a stage change can stop the old stage's pods before
/// the new stage's pods start (two stages must never decide bookings at the same time).
pub fn booking_deployment(sale: &str, stage: Stage) -> String {
    format!("{sale}-booking-app-{stage}")
}

pub fn worker_deployment(sale: &str, stage: Stage) -> String {
    format!("{sale}-worker-{stage}")
}

/// The Job that empties a stage's backlog before the sale moves to another stage.
pub fn drain_job(sale: &str, stage: Stage) -> String {
    format!("{sale}-drain-{stage}")
}

/// NetworkPolicy of the booking API pods (a store's policy has the store's name).
pub fn api_network_policy(sale: &str) -> String {
    format!("{sale}-booking-app")
}

/// NetworkPolicy of the sale's other booking-app pods: worker, drain, calibration.
pub fn internal_network_policy(sale: &str) -> String {
    format!("{sale}-booking-internal")
}

pub fn booking_pdb(sale: &str) -> String {
    format!("{sale}-booking-app")
}

/// StatefulSet volumeClaimTemplate name; PVCs are `data-<statefulset>-0`.
pub const DATA_VOLUME: &str = "data";

pub fn data_claim(stateful_set: &str) -> String {
    format!("{DATA_VOLUME}-{stateful_set}-0")
}

/// Keys of the generated credentials Secret.
pub mod secret_keys {
    pub const POSTGRES_PASSWORD: &str = "postgres-password";
    pub const DATABASE_URL: &str = "database-url";
    pub const REDIS_PASSWORD: &str = "redis-password";
    pub const REDIS_URL: &str = "redis-url";
    /// booking-app's bearer-token signing secret (mounted as `AUTH_HS256_SECRET_FILE`).
    pub const AUTH_HS256_SECRET: &str = "auth-hs256-secret";
}

/// In-cluster DNS name of a Service in the sale's namespace.
pub fn service_host(service: &str, namespace: &str) -> String {
    format!("{service}.{namespace}.svc")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_name_of_a_40_character_sale_is_a_dns_label() {
        let sale = "a".repeat(40);
        let longest = Stage::ALL
            .iter()
            .flat_map(|s| {
                [
                    booking_deployment(&sale, *s),
                    worker_deployment(&sale, *s),
                    drain_job(&sale, *s),
                ]
            })
            .map(|n| n.len())
            .max()
            .unwrap();
        assert!(longest <= 63, "{longest}");
    }
}
