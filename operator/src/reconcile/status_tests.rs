//! Status computed from observed children, without a cluster: each test builds the desired
//! children, marks some ready, and checks phase and conditions.

use k8s_openapi::api::apps::v1::{DeploymentStatus, StatefulSetStatus};
use k8s_openapi::api::batch::v1::JobStatus;
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::fixtures::{FlashSaleBuilder, sale, sale_from};
use crate::reconcile::desired::{self, credentials::Credentials};
use crate::reconcile::transition::{DrainState, plan};
use flashsale_contract::Stage;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).unwrap())
}

/// A sale with its stage plan and sizing: what `compute` is given besides the observations.
struct Case {
    sale: Sale,
    plan: StagePlan,
    sizing: Sizing,
}

impl Case {
    /// `sale` settled on its stage: nothing to leave, no drain.
    fn settled(sale: Sale) -> Self {
        let plan = plan(sale.spec.stage, None, 0, None);
        Self::with_plan(sale, plan)
    }

    fn with_plan(sale: Sale, plan: StagePlan) -> Self {
        let sizing = crate::fixtures::sized(&sale);
        Case { sale, plan, sizing }
    }

    /// The status computed after `previous` from `observed`, at second `t`.
    fn status(&self, previous: &FlashSaleStatus, observed: &Observed, t: i64) -> FlashSaleStatus {
        compute(
            previous,
            &self.sale,
            &self.plan,
            &self.sizing,
            observed,
            &at(t),
        )
    }

    /// The first status (at second 1), every workload `ready` pods ready.
    fn first_status(&self, ready: i32) -> FlashSaleStatus {
        self.status(&Default::default(), &self.observed(ready), 1)
    }

    /// What the cluster holds after the children were applied, every workload `ready` pods ready.
    fn observed(&self, ready: i32) -> Observed {
        let mut children = desired::build(
            &self.sale,
            &self.plan,
            &self.sizing,
            &Credentials::generate(),
        );
        for sts in &mut children.stateful_sets {
            sts.metadata.generation = Some(1);
            sts.status = Some(StatefulSetStatus {
                observed_generation: Some(1),
                ready_replicas: Some(ready.min(1)),
                updated_replicas: Some(ready.min(1)),
                ..Default::default()
            });
        }
        for d in &mut children.deployments {
            let want = d.spec.as_ref().unwrap().replicas.unwrap();
            d.metadata.generation = Some(1);
            d.status = Some(DeploymentStatus {
                observed_generation: Some(1),
                ready_replicas: Some(ready.min(want)),
                updated_replicas: Some(ready.min(want)),
                ..Default::default()
            });
        }
        Observed {
            children,
            ..Observed::default()
        }
    }
}

fn cond<'a>(s: &'a FlashSaleStatus, t: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == t)
        .unwrap_or_else(|| panic!("no {t} condition in {:?}", s.conditions))
}

fn pinned(stage: Stage) -> Sale {
    sale_from(
        &FlashSaleBuilder::new("s", stage)
            .per_pod_rps(500.0)
            .target_rps(1000)
            .replicas(2, 10)
            .build(),
    )
}

#[test]
fn nothing_created_yet_is_pending() {
    let c = Case::settled(pinned(Stage::Postgres));
    let s = c.status(&Default::default(), &Observed::default(), 1);
    assert_eq!(s.phase, Some(Phase::Pending));
    assert_eq!(cond(&s, types::READY).status, "False");
    assert_eq!(s.stage, Some(Stage::Postgres));
    assert_eq!(s.observed_generation, Some(1));
}

#[test]
fn starting_stores_mean_provisioning_with_a_reason() {
    let c = Case::settled(pinned(Stage::Redis));
    let s = c.first_status(0);
    assert_eq!(s.phase, Some(Phase::Provisioning));
    let stores = cond(&s, types::STORES_READY);
    assert_eq!(
        (stores.status.as_str(), stores.reason.as_str()),
        ("False", "StoresStarting")
    );
    assert!(
        stores.message.contains("redis 0/1 ready"),
        "{}",
        stores.message
    );
    assert_eq!(cond(&s, types::READY).reason, "StoresStarting");
}

#[test]
fn everything_ready_and_pinned_is_ready() {
    let c = Case::settled(pinned(Stage::Kafka));
    // 1000 / (500 × 0.7) = 2.86 → 3
    assert_eq!(c.sizing.booking_replicas, 3);
    let s = c.first_status(10);
    assert_eq!(s.phase, Some(Phase::Ready));
    assert_eq!((s.replicas, s.desired_replicas), (3, 3));
    assert_eq!(s.per_pod_rps, Some(500.0));
    for t in [
        types::READY,
        types::STORES_READY,
        types::BOOKING_APP_READY,
        types::WORKER_READY,
        types::STAGE_SETTLED,
        types::CALIBRATED,
    ] {
        assert_eq!(cond(&s, t).status, "True", "{t}: {:?}", cond(&s, t));
    }
    assert_eq!(
        s.endpoint.as_deref(),
        Some("http://s-booking-app.ns.svc:8080")
    );
    assert_eq!(
        s.event_id,
        Some(booking_app::sale_event_id(&c.sale).to_string()),
        "clients find the sale's event here"
    );
}

#[test]
fn stage_without_worker_has_no_worker_condition() {
    let c = Case::settled(pinned(Stage::Postgres));
    let s = c.first_status(10);
    assert!(s.conditions.iter().all(|c| c.type_ != types::WORKER_READY));
}

#[test]
fn running_but_uncalibrated_is_calibrating() {
    let c = Case::settled(sale("s", Stage::Postgres));
    let s = c.first_status(10);
    assert_eq!(s.phase, Some(Phase::Calibrating));
    assert_eq!(cond(&s, types::CALIBRATED).reason, "Calibrating");
    assert_eq!(s.sizing.as_ref().unwrap().reason, "NotCalibrated");
}

#[test]
fn losing_readiness_after_ready_is_degraded() {
    let c = Case::settled(pinned(Stage::Postgres));
    let ready = c.first_status(10);
    let mut observed = c.observed(10);
    observed.children.deployments[0]
        .status
        .as_mut()
        .unwrap()
        .ready_replicas = Some(1);
    let s = c.status(&ready, &observed, 2);
    assert_eq!(s.phase, Some(Phase::Degraded));
    let app = cond(&s, types::BOOKING_APP_READY);
    assert_eq!(
        (app.reason.as_str(), app.message.as_str()),
        ("ReplicasNotReady", "s-booking-app-postgres 1/3 ready")
    );
}

#[test]
fn last_transition_time_moves_only_when_the_status_flips() {
    let c = Case::settled(pinned(Stage::Postgres));
    let first = c.first_status(0);
    let same = c.status(&first, &c.observed(0), 2);
    assert_eq!(
        first, same,
        "an unchanged sale must produce an identical status"
    );
    let flipped = c.status(&same, &c.observed(10), 3);
    assert_eq!(cond(&flipped, types::READY).last_transition_time, at(3));
    assert_eq!(
        cond(&flipped, types::STAGE_SETTLED).last_transition_time,
        at(1),
        "StageSettled stayed True"
    );
}

#[test]
fn a_drain_shows_as_draining_with_the_job_named() {
    let drain = plan(
        Stage::Postgres,
        Some(Stage::Redis),
        0,
        Some(DrainState::Running),
    );
    let c = Case::with_plan(pinned(Stage::Postgres), drain);
    let mut observed = c.observed(10);
    observed.children.jobs[0].status = Some(JobStatus {
        active: Some(1),
        ..Default::default()
    });
    let s = c.status(&Default::default(), &observed, 1);
    assert_eq!(s.phase, Some(Phase::Draining));
    assert_eq!(s.stage, Some(Stage::Redis));
    let settled = cond(&s, types::STAGE_SETTLED);
    assert_eq!(settled.reason, "DrainingBacklog");
    assert!(
        settled.message.contains("s-drain-redis"),
        "{}",
        settled.message
    );
    assert_eq!(
        cond(&s, types::BOOKING_APP_READY).reason,
        "StoppedForStageChange"
    );
    assert_eq!(cond(&s, types::READY).status, "False");
}

#[test]
fn a_missing_external_secret_is_named() {
    let c = Case::settled(sale_from(
        &FlashSaleBuilder::new("s", Stage::Postgres)
            .external_postgres("pg", "url")
            .build(),
    ));
    let mut observed = c.observed(10);
    observed.missing_external.push("pg/url".into());
    let s = c.status(&Default::default(), &observed, 1);
    let stores = cond(&s, types::STORES_READY);
    assert_eq!(stores.reason, "ExternalSecretMissing");
    assert!(stores.message.contains("pg/url"));
}

#[test]
fn an_invalid_spec_keeps_the_last_status_and_says_why() {
    let c = Case::settled(pinned(Stage::Postgres));
    let ready = c.first_status(10);
    let err = Error::InvalidSpec("postgres.storage cannot change".into());
    let s = compute_invalid(&ready, Some(2), &err, &at(2));
    assert_eq!(s.phase, Some(Phase::Degraded));
    assert_eq!(s.replicas, ready.replicas);
    let r = cond(&s, types::READY);
    assert_eq!(
        (r.status.as_str(), r.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert_eq!(s.observed_generation, Some(2));
}

#[test]
fn a_conflict_is_a_true_condition_and_keeps_the_sale_from_ready() {
    let c = Case::settled(pinned(Stage::Postgres));
    let mut observed = c.observed(10);
    let ready = c.status(&Default::default(), &observed, 1);
    assert_eq!(ready.phase, Some(Phase::Ready));
    assert!(ready.conditions.iter().all(|c| c.type_ != types::CONFLICT));

    let taken = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some("s-booking-app".into()),
        ..Default::default()
    };
    observed.conflicts = vec![crate::reconcile::ownership::Conflict::new(
        "Service", &taken,
    )];
    let s = c.status(&ready, &observed, 2);
    assert_eq!(s.phase, Some(Phase::Degraded));
    let conflict = cond(&s, types::CONFLICT);
    assert_eq!(
        (conflict.status.as_str(), conflict.reason.as_str()),
        ("True", FOREIGN_OBJECT)
    );
    assert!(conflict.message.contains("Service s-booking-app"));
    assert_eq!(cond(&s, types::READY).reason, FOREIGN_OBJECT);
    let events = crate::reconcile::events::transitions(&ready, &s);
    assert!(
        events
            .iter()
            .any(|e| e.reason == "Conflict" && e.note.as_deref() == Some(&conflict.message)),
        "{:?}",
        events.iter().map(|e| &e.reason).collect::<Vec<_>>()
    );
    assert!(
        crate::reconcile::events::transitions(&s, &s).is_empty(),
        "once"
    );
}
