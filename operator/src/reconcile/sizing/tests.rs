//! Unit tests of `sizing::decide`: calibration, target, window and observed load together, and
//! the values the builders read.

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::{CalibrationRecord, FlashSale, SizingStatus, WindowSpec};
use crate::fixtures::{FlashSaleBuilder, sale_from};
use crate::schedule::to_time;
use flashsale_contract::CalibrationResult;
use flashsale_contract::Stage;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const NOW: &str = "2026-12-01T09:00:00Z";

fn quiet() -> Inputs {
    Inputs::at(at(NOW))
}

fn measured(fs: &FlashSale, rps: f64) -> FlashSaleStatus {
    let sale = sale_from(fs);
    FlashSaleStatus {
        calibration: Some(CalibrationRecord {
            stage: fs.spec.stage,
            image: sale.booking_image.clone(),
            resources: Some(calibration_key(&sale, None).resources),
            slo_p99_ms: fs.spec.capacity.slo_p99_ms,
            per_pod_rps: rps,
            drain_rps: None,
            measured_at: to_time(at("2026-12-01T08:00:00Z")),
            job: None,
            recalibrate: None,
        }),
        ..FlashSaleStatus::default()
    }
}

fn with_window(mut fs: FlashSale, starts: &str, ends: &str, warmup: &str) -> FlashSale {
    let time = |s: &str| Time(s.parse().unwrap());
    fs.spec.window = Some(WindowSpec {
        starts_at: time(starts),
        ends_at: time(ends),
        warmup: Some(warmup.into()),
    });
    fs
}

#[test]
fn pinned_capacity_sizes_for_the_target() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(10_000)
        .per_pod_rps(1_000.0)
        .replicas(2, 100)
        .build();
    let s = decide(&sale_from(&fs), &FlashSaleStatus::default(), &quiet());
    // 10000 / (1000 × 0.7) = 14.3 → 15
    assert_eq!(
        (s.booking_replicas, s.reason.as_str()),
        (15, "SizedForTarget")
    );
    assert_eq!(s.planned_rps, Some(15.0 * 700.0));
    assert_eq!(
        (s.calibration.reason, s.calibration.run.clone()),
        ("Pinned", None)
    );
    assert_eq!(s.wake_at, None, "nothing changes by itself");
}

#[test]
fn without_a_measurement_it_calibrates_and_holds_min_replicas() {
    let fs = FlashSaleBuilder::new("s", Stage::Redis)
        .target_rps(50_000)
        .replicas(3, 100)
        .build();
    let s = decide(&sale_from(&fs), &FlashSaleStatus::default(), &quiet());
    assert_eq!(
        (s.booking_replicas, s.reason.as_str()),
        (3, "NotCalibrated")
    );
    assert!(s.message.contains("calibrate first"), "{}", s.message);
    let run = s.calibration.run.expect("a calibration runs");
    assert_eq!(
        (run.key.stage, run.attempt, run.with_job),
        (Stage::Redis, 1, false)
    );
    assert_eq!(s.planned_rps, None);
}

#[test]
fn a_finished_calibration_sizes_the_sale_in_the_same_pass() {
    let fs = FlashSaleBuilder::new("s", Stage::Redis)
        .target_rps(50_000)
        .replicas(3, 100)
        .build();
    let done = Observation {
        server_ready: true,
        job: JobState::Succeeded(CalibrationResult {
            per_pod_rps: 5000.0,
            slo_p99_ms: 200,
            p99_ms: 120.0,
            error_rate: 0.0,
            drain_rps: None,
        }),
    };
    let s = decide(
        &sale_from(&fs),
        &FlashSaleStatus::default(),
        &Inputs {
            calibration: done,
            ..quiet()
        },
    );
    // 50000 / 3500 = 14.3 → 15
    assert_eq!(s.booking_replicas, 15);
    assert_eq!(
        s.calibration.record.as_ref().map(|r| r.per_pod_rps),
        Some(5000.0)
    );
    assert_eq!(s.calibration.run, None);
}

#[test]
fn changing_the_target_resizes_without_recalibrating() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(7_000)
        .replicas(1, 100)
        .build();
    let status = measured(&fs, 1_000.0);
    assert_eq!(
        decide(&sale_from(&fs), &status, &quiet()).booking_replicas,
        10
    );
    let bigger = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(14_000)
        .replicas(1, 100)
        .build();
    let s = decide(&sale_from(&bigger), &status, &quiet());
    assert_eq!(s.booking_replicas, 20);
    assert_eq!(
        (s.calibration.reason, s.calibration.run),
        ("Measured", None)
    );
}

#[test]
fn changing_the_stage_recalibrates() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(7_000)
        .replicas(2, 100)
        .build();
    let status = measured(&fs, 1_000.0);
    let moved = FlashSaleBuilder::new("s", Stage::Kafka)
        .target_rps(7_000)
        .replicas(2, 100)
        .build();
    let s = decide(&sale_from(&moved), &status, &quiet());
    assert_eq!(
        (s.booking_replicas, s.reason.as_str()),
        (2, "NotCalibrated")
    );
    assert_eq!(s.calibration.run.map(|r| r.key.stage), Some(Stage::Kafka));
}

#[test]
fn the_recalibrate_annotation_measures_again_but_keeps_serving() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(7_000)
        .replicas(1, 100)
        .build();
    let status = measured(&fs, 1_000.0);
    let s = decide(
        &sale_from(&fs),
        &status,
        &Inputs {
            recalibrate: Some("1".into()),
            ..quiet()
        },
    );
    assert_eq!(
        s.booking_replicas, 10,
        "still sized with the old measurement"
    );
    assert!(s.calibration.run.is_some());
}

#[test]
fn a_bigger_pod_is_measured_again_while_the_old_number_keeps_the_sale_sized() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(7_000)
        .replicas(1, 100)
        .build();
    let status = measured(&fs, 1_000.0);
    let mut bigger = fs.clone();
    bigger.spec.booking_app.resources = Some(
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}
        }))
        .unwrap(),
    );
    let s = decide(&sale_from(&bigger), &status, &quiet());
    assert_eq!(
        s.booking_replicas, 10,
        "sized with the 1-CPU measurement until the 2-CPU one is in"
    );
    let run = s.calibration.run.expect("a calibration runs");
    assert!(
        run.key.resources.starts_with("requests cpu=2,memory=1Gi"),
        "{}",
        run.key.resources
    );
    assert!(!s.calibration.calibrated);
}

fn kafka_measured(fs: &FlashSale, rps: f64, drain_rps: f64) -> FlashSaleStatus {
    let mut status = measured(fs, rps);
    if let Some(record) = status.calibration.as_mut() {
        record.drain_rps = Some(drain_rps);
    }
    status
}

#[test]
fn stage_kafka_plans_its_queue_from_the_measured_drain_rate() {
    let fs = FlashSaleBuilder::new("s", Stage::Kafka)
        .target_rps(5_000)
        .replicas(1, 100)
        .build();
    let fs = with_window(fs, "2026-12-01T08:00:00Z", "2026-12-01T10:00:00Z", "0s");
    let s = decide(
        &sale_from(&fs),
        &kafka_measured(&fs, 2_000.0, 800.0),
        &quiet(),
    );
    // One event, one partition: one worker, whatever the target; the queue takes the rest.
    assert_eq!(s.worker_replicas, 1);
    let queue = s.queue.expect("a queue plan");
    assert_eq!((queue.drain_rps, queue.growth_rps), (800.0, 4_200.0));
    // 4200 rps × 2 h = 30.24M queued, 37800 s = 10h30m to decide after the window.
    assert!(
        queue.message().ends_with(
            "a 2h peak leaves 30240000 requests queued, the last decided 10h30m after it ends"
        ),
        "{}",
        queue.message()
    );
    assert_eq!(
        s.derived.partitions,
        Some(crate::capacity::DEFAULT_PARTITIONS)
    );
}

#[test]
fn pinned_workers_win_and_other_stages_plan_no_queue() {
    let mut fs = FlashSaleBuilder::new("s", Stage::Kafka)
        .target_rps(5_000)
        .replicas(1, 100)
        .build();
    fs.spec.booking_app.worker.replicas = Some(3);
    let s = decide(
        &sale_from(&fs),
        &kafka_measured(&fs, 2_000.0, 800.0),
        &quiet(),
    );
    assert_eq!(s.worker_replicas, 3);
    assert!(s.queue.is_some(), "the queue is still explained");
    let redis = FlashSaleBuilder::new("s", Stage::Redis)
        .target_rps(5_000)
        .replicas(1, 100)
        .build();
    let s = decide(
        &sale_from(&redis),
        &kafka_measured(&redis, 2_000.0, 800.0),
        &quiet(),
    );
    assert_eq!((s.worker_replicas, s.queue), (1, None));
    // Kafka without a measured drain rate (pinned perPodRps): one worker, nothing to plan.
    let pinned = FlashSaleBuilder::new("s", Stage::Kafka)
        .target_rps(5_000)
        .per_pod_rps(2_000.0)
        .build();
    let s = decide(&sale_from(&pinned), &FlashSaleStatus::default(), &quiet());
    assert_eq!((s.worker_replicas, s.queue), (1, None));
}

#[test]
fn a_future_window_holds_min_replicas_and_wakes_at_the_warmup() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(7_000)
        .per_pod_rps(1_000.0)
        .replicas(2, 100)
        .build();
    let fs = with_window(fs, "2026-12-01T18:00:00Z", "2026-12-01T20:00:00Z", "10m");
    let sale = sale_from(&fs);
    let before = decide(&sale, &FlashSaleStatus::default(), &quiet());
    assert_eq!(
        (before.booking_replicas, before.reason.as_str()),
        (2, "BeforeWindow")
    );
    assert_eq!(before.wake_at, Some(at("2026-12-01T17:50:00Z")));
    assert!(
        before.message.contains("2026-12-01T17:50:00Z"),
        "{}",
        before.message
    );

    let warm = decide(
        &sale,
        &FlashSaleStatus::default(),
        &Inputs::at(at("2026-12-01T17:50:00Z")),
    );
    assert_eq!(
        (warm.booking_replicas, warm.window.phase),
        (10, WindowPhase::WarmingUp)
    );
    assert_eq!(warm.wake_at, Some(at("2026-12-01T18:00:00Z")));

    let after = decide(
        &sale,
        &FlashSaleStatus::default(),
        &Inputs::at(at("2026-12-01T20:00:00Z")),
    );
    assert_eq!(
        (after.booking_replicas, after.reason.as_str()),
        (2, "AfterWindow")
    );
    assert_eq!(after.wake_at, None);
}

#[test]
fn observed_load_above_plan_scales_up_and_wakes_to_read_again() {
    let fs = FlashSaleBuilder::new("s", Stage::Redis)
        .target_rps(7_000)
        .per_pod_rps(1_000.0)
        .replicas(2, 40)
        .build();
    let previous = FlashSaleStatus {
        desired_replicas: 10,
        ..FlashSaleStatus::default()
    };
    let load = ObservedLoad {
        pods: 10,
        total_rps: 14_000.0,
    };
    let s = decide(
        &sale_from(&fs),
        &previous,
        &Inputs {
            load: Some(Some(load)),
            ..quiet()
        },
    );
    assert_eq!(
        (s.booking_replicas, s.reason.as_str()),
        (20, "ObservedLoad")
    );
    assert!(s.message.contains("1400 rps per pod"), "{}", s.message);
    assert_eq!(s.observed, Some(load));
    assert_eq!(s.wake_at, Some(at(NOW) + READ_INTERVAL));
}

#[test]
fn observed_quiet_scales_down_only_after_the_cooldown() {
    let fs = FlashSaleBuilder::new("s", Stage::Redis)
        .target_rps(7_000)
        .per_pod_rps(1_000.0)
        .replicas(2, 40)
        .build();
    let last = at(NOW) - TimeDelta::minutes(1);
    let previous = FlashSaleStatus {
        desired_replicas: 20,
        sizing: Some(SizingStatus {
            last_scale_time: Some(to_time(last)),
            ..SizingStatus::default()
        }),
        ..FlashSaleStatus::default()
    };
    let load = Some(Some(ObservedLoad {
        pods: 20,
        total_rps: 100.0,
    }));
    let held = decide(&sale_from(&fs), &previous, &Inputs { load, ..quiet() });
    assert_eq!(
        (held.booking_replicas, held.reason.as_str()),
        (20, "CoolingDown")
    );
    assert_eq!(held.wake_at, Some(at(NOW) + READ_INTERVAL));
    let later = Inputs {
        load,
        ..Inputs::at(last + DEFAULT_SCALE_DOWN_COOLDOWN)
    };
    assert_eq!(
        decide(&sale_from(&fs), &previous, &later).booking_replicas,
        10
    );
}

#[test]
fn pools_and_max_connections_follow_max_replicas_not_the_current_size() {
    let small = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(1_000)
        .per_pod_rps(1_000.0)
        .replicas(2, 20)
        .build();
    let big = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(20_000)
        .per_pod_rps(1_000.0)
        .replicas(2, 20)
        .build();
    let a = decide(&sale_from(&small), &FlashSaleStatus::default(), &quiet());
    let b = decide(&sale_from(&big), &FlashSaleStatus::default(), &quiet());
    assert_ne!(a.booking_replicas, b.booking_replicas);
    assert_eq!(
        a.derived, b.derived,
        "scaling must not roll pods or restart Postgres"
    );
    assert!(a.derived.connections.peak <= u64::from(a.derived.connections.max_connections));
}

#[test]
fn stores_of_the_new_stage_gate_calibration() {
    let fs = FlashSaleBuilder::new("s", Stage::Kafka).build();
    let s = decide(
        &sale_from(&fs),
        &FlashSaleStatus::default(),
        &Inputs {
            stores_ready: false,
            ..quiet()
        },
    );
    assert_eq!(
        (s.calibration.reason, s.calibration.run),
        ("WaitingForStores", None)
    );
}

fn size(fs: &FlashSale) -> Sizing {
    decide(
        &sale_from(fs),
        &FlashSaleStatus::default(),
        &Inputs::at(chrono::DateTime::UNIX_EPOCH),
    )
}

#[test]
fn pinned_per_pod_rps_gives_the_roadmap_formula() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(10_000)
        .per_pod_rps(1_000.0)
        .replicas(1, 100)
        .build();
    let sizing = size(&fs);
    // 10000 / (1000 × 0.7) = 14.28 → 15
    assert_eq!(
        (sizing.booking_replicas, sizing.reason.as_str()),
        (15, "SizedForTarget")
    );
    assert_eq!(
        (sizing.calibration.calibrated, sizing.calibration.reason),
        (true, "Pinned")
    );
    assert_eq!(sizing.requeue_after(chrono::DateTime::UNIX_EPOCH), None);
}

#[test]
fn clamped_to_max_says_how_much_the_sale_gets() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(1_000_000)
        .per_pod_rps(1_000.0)
        .replicas(2, 10)
        .build();
    let sizing = size(&fs);
    assert_eq!(
        (sizing.booking_replicas, sizing.reason.as_str()),
        (10, "ClampedByMaxReplicas")
    );
    assert!(
        sizing.message.contains("only 7000 rps"),
        "{}",
        sizing.message
    );
}

#[test]
fn without_capacity_it_runs_min_replicas_and_calibrates() {
    let sizing = size(
        &FlashSaleBuilder::new("s", Stage::Redis)
            .replicas(3, 10)
            .build(),
    );
    assert_eq!(
        (sizing.booking_replicas, sizing.reason.as_str()),
        (3, "NotCalibrated")
    );
    assert_eq!(
        (sizing.calibration.calibrated, sizing.calibration.reason),
        (false, "Calibrating")
    );
    assert!(sizing.calibration.run.is_some());
    assert!(sizing.calibration.attempt.is_some());
    assert_eq!(sizing.worker_replicas, 1);
}

#[test]
fn pools_fit_max_connections_at_max_replicas_through_a_rollout() {
    let fs = FlashSaleBuilder::new("s", Stage::Postgres)
        .target_rps(100_000)
        .per_pod_rps(1_000.0)
        .replicas(1, 60)
        .build();
    let sizing = size(&fs);
    // 60 API pods (stage postgres has no worker) + 25% surge, plus the reserve.
    let peak = (60 + 15) * sizing.derived.connections.pool + crate::capacity::RESERVED_CONNECTIONS;
    assert!(
        peak <= sizing.derived.connections.max_connections,
        "{peak} > {}",
        sizing.derived.connections.max_connections
    );
}

#[test]
fn kafka_partitions_cover_the_workers() {
    let mut fs = FlashSaleBuilder::new("s", Stage::Kafka).build();
    fs.spec.booking_app.worker.replicas = Some(9);
    assert_eq!(size(&fs).kafka_partitions(), 9);
}
