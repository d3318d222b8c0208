//! Step 3 of a reconcile: every child object the sale should have, built without I/O from the
//! validated sale, the stage plan, the sizing and the credentials. The applier applies exactly
//! this set and deletes the sale's children that are not in it.

pub mod auth;
pub mod booking_app;
pub mod credentials;
pub mod kafka;
pub mod labels;
pub mod names;
pub mod network_policy;
pub mod pdb;
pub mod pod;
pub mod postgres;
pub mod redis;
pub mod store;
pub mod store_tls;
#[cfg(test)]
pub mod testing;
pub mod worker;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;

use crate::reconcile::kinds::{Objects, PerKind};
use crate::reconcile::sizing::Sizing;
use crate::reconcile::transition::StagePlan;
use crate::reconcile::validate::Sale;
use credentials::Credentials;
use labels::Component;

pub const POSTGRES_USER: &str = "flashsale";
pub const POSTGRES_DATABASE: &str = "flashsale";
pub const POSTGRES_PORT: i32 = 5432;
pub const REDIS_PORT: i32 = 6379;
pub const KAFKA_PORT: i32 = 9092;
pub const KAFKA_CONTROLLER_PORT: i32 = 9093;

/// The children of a sale, by kind: what `build` wants, and what `observe` finds.
pub type Children = PerKind<Objects>;

pub fn build(sale: &Sale, plan: &StagePlan, sizing: &Sizing, creds: &Credentials) -> Children {
    let mut children = Children::default();
    // Always kept, even with external stores: the in-cluster data volumes were initialised with
    // these passwords, and switching back must find them again.
    children.secrets.push(credentials::secret(sale, creds));

    let stages = plan.stages();
    let policies = sale.spec.network_policy.enabled;
    let mut store = |pair: (StatefulSet, Service), component, ports: &[i32]| {
        if policies {
            let name = pair.0.metadata.name.clone().unwrap_or_default();
            let policy = network_policy::store(sale, name, component, ports);
            children.network_policies.push(policy);
        }
        children.stateful_sets.push(pair.0);
        children.services.push(pair.1);
    };
    if let Some(pg) = sale.postgres.in_cluster() {
        store(
            postgres::build(sale, pg, sizing),
            Component::Postgres,
            &[POSTGRES_PORT],
        );
    }
    if let Some(r) = sale
        .redis
        .in_cluster()
        .filter(|_| stages.iter().any(|s| s.uses_redis()))
    {
        store(redis::build(sale, r), Component::Redis, &[REDIS_PORT]);
    }
    if let Some(k) = sale
        .kafka
        .in_cluster()
        .filter(|_| stages.iter().any(|s| s.uses_kafka()))
    {
        store(kafka::build(sale, k), Component::Kafka, &[KAFKA_PORT]);
    }
    if policies {
        let api_from = &sale.spec.network_policy.api_from;
        children
            .network_policies
            .extend(network_policy::booking(sale, api_from));
    }

    children
        .services
        .push(booking_app::service(sale, plan.serving));
    children.pdbs.push(pdb::build(sale, plan.serving));
    match plan.leaving {
        None => {
            children.deployments.push(booking_app::api_deployment(
                sale,
                plan.serving,
                sizing.booking_replicas,
                sizing,
            ));
            if plan.serving.has_worker() {
                children
                    .deployments
                    .push(worker::worker_deployment(sale, plan.serving, sizing));
            }
        }
        Some(leaving) => {
            // The old stage's API is stopped; its worker keeps emptying the backlog meanwhile.
            children
                .deployments
                .push(booking_app::api_deployment(sale, leaving.from, 0, sizing));
            if leaving.from.has_worker() {
                let old = Sizing {
                    worker_replicas: sizing.worker_replicas.max(1),
                    ..sizing.clone()
                };
                children
                    .deployments
                    .push(worker::worker_deployment(sale, leaving.from, &old));
            }
            if let Some(stage) = plan.drain_job() {
                children.jobs.push(worker::drain_job(sale, stage, sizing));
            }
        }
    }
    // While calibrating: the scratch pod, its Service and (once it is Ready) the loadgen Job.
    // When calibration ends they are no longer desired, so the applier deletes them.
    if let Some(run) = &sizing.calibration.run {
        let (deployment, service, job) = crate::calibration::objects::build(sale, run, sizing);
        children.deployments.push(deployment);
        children.services.push(service);
        children.jobs.extend(job);
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{FlashSaleBuilder, sale, sale_from, sizing};
    use crate::reconcile::transition::{DrainState, plan};
    use flashsale_contract::Stage;

    fn names<T: kube::Resource>(objects: &[T]) -> Vec<String> {
        objects
            .iter()
            .map(|o| o.meta().name.clone().unwrap())
            .collect()
    }

    fn build_for(stage: Stage) -> Children {
        build(
            &sale("s", stage),
            &plan(stage, None, 0, None),
            &sizing(3),
            &Credentials::generate(),
        )
    }

    #[test]
    fn stage_postgres_is_postgres_and_the_api() {
        let c = build_for(Stage::Postgres);
        assert_eq!(names(&c.stateful_sets), ["s-postgres"]);
        assert_eq!(names(&c.deployments), ["s-booking-app-postgres"]);
        assert_eq!(names(&c.services), ["s-postgres", "s-booking-app"]);
        assert_eq!(names(&c.secrets), ["s-credentials"]);
        assert_eq!(names(&c.pdbs), ["s-booking-app"]);
        assert!(c.jobs.is_empty());
    }

    #[test]
    fn stage_redis_adds_redis_and_the_syncer() {
        let c = build_for(Stage::Redis);
        assert_eq!(names(&c.stateful_sets), ["s-postgres", "s-redis"]);
        assert_eq!(
            names(&c.deployments),
            ["s-booking-app-redis", "s-worker-redis"]
        );
    }

    #[test]
    fn stage_kafka_adds_kafka_and_the_consumers() {
        let c = build_for(Stage::Kafka);
        assert_eq!(names(&c.stateful_sets), ["s-postgres", "s-kafka"]);
        assert_eq!(
            names(&c.deployments),
            ["s-booking-app-kafka", "s-worker-kafka"]
        );
    }

    #[test]
    fn every_child_is_owned_by_the_sale_and_labelled() {
        let c = build_for(Stage::Kafka);
        let metas = c
            .secrets
            .iter()
            .map(|o| &o.metadata)
            .chain(c.services.iter().map(|o| &o.metadata))
            .chain(c.stateful_sets.iter().map(|o| &o.metadata))
            .chain(c.pdbs.iter().map(|o| &o.metadata))
            .chain(c.deployments.iter().map(|o| &o.metadata))
            .chain(c.network_policies.iter().map(|o| &o.metadata));
        for m in metas {
            let owner = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.controller),
                ("FlashSale", Some(true)),
                "{:?}",
                m.name
            );
            assert_eq!(
                m.labels.as_ref().unwrap()[labels::MANAGED_BY],
                labels::MANAGER
            );
            assert_eq!(m.namespace.as_deref(), Some("ns"));
        }
    }

    #[test]
    fn every_in_cluster_store_and_the_booking_pods_get_a_policy() {
        assert_eq!(
            names(&build_for(Stage::Postgres).network_policies),
            ["s-postgres", "s-booking-app", "s-booking-internal"]
        );
        assert_eq!(
            names(&build_for(Stage::Kafka).network_policies),
            [
                "s-postgres",
                "s-kafka",
                "s-booking-app",
                "s-booking-internal"
            ]
        );
        let mut fs = FlashSaleBuilder::new("s", Stage::Redis).build();
        fs.spec.network_policy.enabled = false;
        let c = build(
            &sale_from(&fs),
            &plan(Stage::Redis, None, 0, None),
            &sizing(1),
            &Credentials::generate(),
        );
        assert!(c.network_policies.is_empty());
    }

    #[test]
    fn external_postgres_deploys_no_database() {
        let fs = FlashSaleBuilder::new("s", Stage::Postgres)
            .external_postgres("pg", "url")
            .build();
        let c = build(
            &sale_from(&fs),
            &plan(Stage::Postgres, None, 0, None),
            &sizing(1),
            &Credentials::generate(),
        );
        assert!(c.stateful_sets.is_empty());
        assert_eq!(names(&c.services), ["s-booking-app"]);
    }

    #[test]
    fn leaving_redis_stops_its_api_keeps_its_syncer_and_drains() {
        let sale = sale("s", Stage::Kafka);
        let p = plan(
            Stage::Kafka,
            Some(Stage::Redis),
            0,
            Some(DrainState::Running),
        );
        let c = build(&sale, &p, &sizing(4), &Credentials::generate());
        assert_eq!(
            names(&c.deployments),
            ["s-booking-app-redis", "s-worker-redis"]
        );
        assert_eq!(c.deployments[0].spec.as_ref().unwrap().replicas, Some(0));
        assert_eq!(names(&c.jobs), ["s-drain-redis"]);
        // The next stage's store starts early; its API waits for the drain.
        assert_eq!(
            names(&c.stateful_sets),
            ["s-postgres", "s-redis", "s-kafka"]
        );
        let svc = c
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("s-booking-app"))
            .unwrap();
        assert_eq!(
            svc.spec.as_ref().unwrap().selector.as_ref().unwrap()[labels::STAGE],
            "redis"
        );
    }

    #[test]
    fn after_the_drain_only_the_new_stage_remains() {
        let sale = sale("s", Stage::Postgres);
        let p = plan(
            Stage::Postgres,
            Some(Stage::Redis),
            0,
            Some(DrainState::Succeeded),
        );
        let c = build(&sale, &p, &sizing(2), &Credentials::generate());
        assert_eq!(names(&c.deployments), ["s-booking-app-postgres"]);
        assert_eq!(names(&c.stateful_sets), ["s-postgres"]);
        assert!(c.jobs.is_empty());
    }
}
