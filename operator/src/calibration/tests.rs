//! Unit tests of the calibration decisions: when to measure, what a result must look like, retries.

use chrono::{DateTime, TimeDelta, Utc};

use flashsale_contract::{CalibrationResult, Stage};

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const POD: &str = "requests cpu=1,memory=256Mi; limits cpu=1,memory=512Mi";

fn key(stage: Stage) -> CalibrationKey {
    CalibrationKey {
        stage,
        image: "booking-app:1".into(),
        resources: Some(POD.into()),
        slo_p99_ms: 200,
        recalibrate: None,
    }
}

fn record(stage: Stage, rps: f64) -> CalibrationRecord {
    CalibrationRecord {
        key: key(stage),
        per_pod_rps: rps,
        drain_rps: None,
        measured_at: to_time(at("2026-12-01T08:00:00Z")),
        job: Some("s-cal-00000000-lg".into()),
    }
}

const NOW: &str = "2026-12-01T09:00:00Z";
const NOTHING: Observation = Observation {
    server_ready: false,
    job: JobState::Absent,
};

fn inputs<'a>(key: &'a CalibrationKey, observation: &'a Observation) -> Evidence<'a> {
    Evidence {
        sale: "s",
        key,
        pinned: None,
        record: None,
        attempt: None,
        stores_ready: true,
        observation,
        now: at(NOW),
        hold: None,
    }
}

/// A pass that finds `record` in status, nothing observed.
fn with_record<'a>(key: &'a CalibrationKey, record: &'a CalibrationRecord) -> Evidence<'a> {
    Evidence {
        record: Some(record),
        ..inputs(key, &NOTHING)
    }
}

/// The next pass `after` the first: `attempt` carried over, nothing observed.
fn next_pass<'a>(
    key: &'a CalibrationKey,
    attempt: &'a CalibrationAttempt,
    after: TimeDelta,
) -> Evidence<'a> {
    Evidence {
        attempt: Some(attempt),
        now: at(NOW) + after,
        ..inputs(key, &NOTHING)
    }
}

/// The scratch pod is Ready and the Job is in `job`.
fn pod_ready(job: JobState) -> Observation {
    Observation {
        server_ready: true,
        job,
    }
}

fn result(rps: f64) -> CalibrationResult {
    CalibrationResult {
        per_pod_rps: rps,
        slo_p99_ms: 200,
        p99_ms: 150.0,
        error_rate: 0.0,
        drain_rps: None,
    }
}

#[test]
fn result_format_is_what_loadgen_writes() {
    let parsed = read_result(
        r#"{"perPodRps":4210.5,"sloP99Ms":200,"p99Ms":183.2,"errorRate":0.001}"#,
        200,
    )
    .unwrap();
    assert_eq!(
        parsed,
        CalibrationResult {
            per_pod_rps: 4210.5,
            slo_p99_ms: 200,
            p99_ms: 183.2,
            error_rate: 0.001,
            drain_rps: None
        }
    );
    assert_eq!(
        serde_json::to_string(&parsed).unwrap(),
        r#"{"perPodRps":4210.5,"sloP99Ms":200,"p99Ms":183.2,"errorRate":0.001}"#
    );
    // Stage kafka adds the drain rate of the workers behind the pod.
    let kafka = r#"{"perPodRps":900,"sloP99Ms":200,"p99Ms":80,"errorRate":0,"drainRps":786.5}"#;
    assert_eq!(read_result(kafka, 200).unwrap().drain_rps, Some(786.5));
}

#[test]
fn doubtful_results_are_refused() {
    assert_eq!(read_result("  \n", 200), Err(ResultError::Missing));
    assert!(matches!(
        read_result("capacity: 4000 req/s", 200),
        Err(ResultError::Unreadable(_))
    ));
    let other_slo = r#"{"perPodRps":4000,"sloP99Ms":100,"p99Ms":80}"#;
    assert_eq!(
        read_result(other_slo, 200),
        Err(ResultError::SloMismatch {
            got: 100,
            want: 200
        })
    );
    for rps in ["0", "-5", "1e999"] {
        let text = format!(r#"{{"perPodRps":{rps},"sloP99Ms":200,"p99Ms":80}}"#);
        assert!(read_result(&text, 200).is_err(), "{text}");
    }
    let slow = r#"{"perPodRps":4000,"sloP99Ms":200,"p99Ms":201}"#;
    assert!(matches!(
        read_result(slow, 200),
        Err(ResultError::AboveSlo { .. })
    ));
    let no_drain = r#"{"perPodRps":4000,"sloP99Ms":200,"p99Ms":80,"drainRps":0}"#;
    assert!(matches!(
        read_result(no_drain, 200),
        Err(ResultError::Unreadable(_))
    ));
}

#[test]
fn pinned_capacity_needs_no_calibration() {
    let k = key(Stage::Postgres);
    let a = assess(&Evidence {
        pinned: Some(4000.0),
        ..inputs(&k, &NOTHING)
    });
    assert_eq!(
        (a.per_pod_rps, a.calibrated, a.reason),
        (Some(4000.0), true, "Pinned")
    );
    assert_eq!((a.run, a.attempt), (None, None));
}

#[test]
fn a_valid_measurement_is_reused_whatever_the_target() {
    let k = key(Stage::Postgres);
    let r = record(Stage::Postgres, 3100.0);
    let a = assess(&with_record(&k, &r));
    assert_eq!(
        (a.per_pod_rps, a.calibrated, a.reason),
        (Some(3100.0), true, "Measured")
    );
    assert_eq!(a.run, None, "leftover calibration objects get deleted");
    assert_eq!(a.record, Some(r));
}

#[test]
fn new_sale_starts_a_scratch_pod_then_the_job_once_it_is_ready() {
    let k = key(Stage::Redis);
    let a = assess(&inputs(&k, &NOTHING));
    assert_eq!(
        (a.per_pod_rps, a.calibrated, a.reason),
        (None, false, "Calibrating")
    );
    assert_eq!(
        a.run,
        Some(Run {
            key: k.clone(),
            attempt: 1,
            with_job: false
        })
    );
    let attempt = a.attempt.clone().unwrap();
    assert_eq!(attempt.started_at, Some(to_time(at(NOW))));
    assert_eq!(a.requeue_at, Some(at(NOW) + SERVER_READY_TIMEOUT));

    let ready = pod_ready(JobState::Absent);
    let later = Evidence {
        attempt: Some(&attempt),
        now: at(NOW) + TimeDelta::seconds(20),
        ..inputs(&k, &ready)
    };
    let b = assess(&later);
    assert_eq!(
        b.run,
        Some(Run {
            key: k.clone(),
            attempt: 1,
            with_job: true
        })
    );
    assert_eq!(
        b.attempt,
        Some(attempt),
        "nothing in status changes while it runs"
    );
}

#[test]
fn a_stage_change_invalidates_the_measurement() {
    let k = key(Stage::Kafka);
    let r = record(Stage::Postgres, 3100.0);
    let a = assess(&with_record(&k, &r));
    assert_eq!((a.per_pod_rps, a.reason), (None, "Calibrating"));
    assert_eq!(a.record, Some(r), "the old record stays until replaced");
}

#[test]
fn image_pod_size_or_slo_change_recalibrates_sizing_with_the_old_number_meanwhile() {
    let r = record(Stage::Postgres, 3100.0);
    let image = CalibrationKey {
        image: "booking-app:2".into(),
        ..key(Stage::Postgres)
    };
    let bigger = CalibrationKey {
        resources: Some("requests cpu=2,memory=1Gi; limits cpu=2,memory=1Gi".into()),
        ..key(Stage::Postgres)
    };
    let slo = CalibrationKey {
        slo_p99_ms: 50,
        ..key(Stage::Postgres)
    };
    for k in [image, bigger, slo] {
        let a = assess(&with_record(&k, &r));
        assert_eq!(
            (a.per_pod_rps, a.calibrated, a.reason),
            (Some(3100.0), false, "Calibrating"),
            "{k:?}"
        );
        assert!(a.run.is_some(), "{k:?} measures again");
        assert!(
            a.message
                .contains("sized meanwhile with the previous measurement"),
            "{}",
            a.message
        );
        assert!(!k.same_pod(&r), "{k:?}");
    }
    // A record from before pod sizes were recorded is measured again.
    let legacy = CalibrationRecord {
        key: CalibrationKey {
            resources: None,
            ..r.key.clone()
        },
        ..r
    };
    assert!(!key(Stage::Postgres).same_pod(&legacy));
}

#[test]
fn recalibration_on_request_keeps_the_old_number_meanwhile() {
    let k = CalibrationKey {
        recalibrate: Some("2".into()),
        ..key(Stage::Postgres)
    };
    let r = record(Stage::Postgres, 3100.0);
    let a = assess(&with_record(&k, &r));
    assert_eq!(
        (a.per_pod_rps, a.calibrated, a.reason),
        (Some(3100.0), false, "Calibrating")
    );
    assert!(a.run.is_some());
}

#[test]
fn success_records_the_measurement_for_this_stage_image_and_request() {
    let k = CalibrationKey {
        recalibrate: Some("2".into()),
        ..key(Stage::Redis)
    };
    let done = pod_ready(JobState::Succeeded(result(5200.0)));
    let a = assess(&inputs(&k, &done));
    assert_eq!(
        (a.per_pod_rps, a.calibrated, a.reason),
        (Some(5200.0), true, "Measured")
    );
    let r = a.record.unwrap();
    assert_eq!(
        (
            r.key.stage,
            r.key.image.as_str(),
            r.key.slo_p99_ms,
            r.per_pod_rps
        ),
        (Stage::Redis, "booking-app:1", 200, 5200.0)
    );
    assert_eq!(r.key.recalibrate.as_deref(), Some("2"));
    assert_eq!(r.measured_at, to_time(at(NOW)));
    assert_eq!(r.job, Some(job_name("s", &k, 1)));
    assert!(k.matches_record(&r), "the next pass sees it as valid");
    assert_eq!(
        (a.run, a.attempt),
        (None, None),
        "objects deleted, attempt cleared"
    );
}

#[test]
fn failure_is_reported_and_retried_with_growing_backoff() {
    let k = key(Stage::Postgres);
    let failed = pod_ready(JobState::Failed("loadgen exited with code 1: boom".into()));
    let a = assess(&inputs(&k, &failed));
    assert_eq!(
        (a.per_pod_rps, a.calibrated, a.reason),
        (None, false, "CalibrationFailed")
    );
    assert_eq!(a.run, None, "the failed Job and pod are removed");
    assert!(a.message.contains("boom"), "{}", a.message);
    let attempt = a.attempt.unwrap();
    assert_eq!(attempt.failures, 1);
    assert_eq!(a.requeue_at, Some(at(NOW) + FIRST_BACKOFF));

    // During the backoff: nothing runs, the same status is written again.
    let waiting = assess(&next_pass(&k, &attempt, TimeDelta::seconds(10)));
    assert_eq!((waiting.run, waiting.reason), (None, "CalibrationFailed"));
    assert_eq!(waiting.attempt.as_ref(), Some(&attempt));

    // After it: attempt 2, with new object names.
    let retry = assess(&next_pass(&k, &attempt, FIRST_BACKOFF));
    assert_eq!(
        retry.run,
        Some(Run {
            key: k.clone(),
            attempt: 2,
            with_job: false
        })
    );
    assert_eq!(
        retry.attempt.unwrap().started_at,
        Some(to_time(at(NOW) + FIRST_BACKOFF))
    );
}

#[test]
fn a_scratch_pod_that_never_gets_ready_fails_the_attempt() {
    let k = key(Stage::Postgres);
    let started = assess(&inputs(&k, &NOTHING)).attempt.unwrap();
    let still = assess(&next_pass(&k, &started, TimeDelta::minutes(9)));
    assert_eq!(still.reason, "Calibrating");
    let late = assess(&next_pass(&k, &started, SERVER_READY_TIMEOUT));
    assert_eq!(late.reason, "CalibrationFailed");
    assert!(late.message.contains("not Ready"), "{}", late.message);
}

#[test]
fn calibration_waits_for_the_stores() {
    let k = key(Stage::Kafka);
    let a = assess(&Evidence {
        stores_ready: false,
        ..inputs(&k, &NOTHING)
    });
    assert_eq!((a.run, a.reason), (None, "WaitingForStores"));
    assert_eq!(
        a.attempt.unwrap().started_at,
        None,
        "the Ready timeout starts with the pod, not before"
    );
}

#[test]
fn an_attempt_for_other_inputs_is_dropped() {
    let k = key(Stage::Redis);
    let failed = pod_ready(JobState::Failed("x".into()));
    let old = assess(&inputs(&key(Stage::Postgres), &failed))
        .attempt
        .unwrap();
    let a = assess(&next_pass(&k, &old, TimeDelta::zero()));
    assert_eq!(
        a.run,
        Some(Run {
            key: k,
            attempt: 1,
            with_job: false
        })
    );
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    assert_eq!(backoff(1), TimeDelta::seconds(30));
    assert_eq!(backoff(2), TimeDelta::seconds(60));
    assert_eq!(backoff(4), TimeDelta::seconds(240));
    assert_eq!(backoff(7), MAX_BACKOFF);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    assert_eq!(backoff(0), FIRST_BACKOFF);
}

#[test]
fn digest_is_stable_and_tells_keys_apart() {
    let k = key(Stage::Postgres);
    assert_eq!(k.digest(), k.clone().digest());
    assert_eq!(k.digest().len(), 8);
    // Pinned: a new operator build must find the objects an older one created.
    assert_eq!(k.digest(), "c4c6b0a8");
    assert_ne!(k.digest(), key(Stage::Redis).digest());
    assert_ne!(
        k.digest(),
        CalibrationKey {
            recalibrate: Some("x".into()),
            ..k.clone()
        }
        .digest()
    );
    assert_ne!(
        k.digest(),
        CalibrationKey {
            resources: Some("requests cpu=2".into()),
            ..k.clone()
        }
        .digest()
    );
}

#[test]
fn no_calibration_starts_inside_the_window_and_a_run_under_way_stops() {
    let key = key(Stage::Redis);
    let until = at("2026-12-01T12:00:00Z");
    let ready = pod_ready(JobState::Running);
    let a = assess(&Evidence {
        hold: Some(Hold::Window { until }),
        ..inputs(&key, &ready)
    });
    assert_eq!(a.run, None, "no scratch pod, no Job");
    assert_eq!(a.reason, "WaitingForWindowEnd");
    assert_eq!(a.requeue_at, Some(until));
    assert!(!a.calibrated);
    assert!(a.message.contains("minReplicas"), "{}", a.message);
}

#[test]
fn a_held_calibration_keeps_the_last_measurement_of_the_stage() {
    let key = key(Stage::Redis);
    let mut record = record(Stage::Redis, 900.0);
    record.key.image = "older-image".into();
    let a = assess(&Evidence {
        record: Some(&record),
        hold: Some(Hold::StageChange),
        ..inputs(&key, &NOTHING)
    });
    assert_eq!(a.per_pod_rps, Some(900.0));
    assert_eq!(a.reason, "WaitingForStageChange");
    assert!(
        a.message.contains("keeps its last measurement"),
        "{}",
        a.message
    );
    assert_eq!(a.run, None);
}

#[test]
fn a_valid_measurement_is_used_whatever_the_hold() {
    let key = key(Stage::Redis);
    let record = record(Stage::Redis, 700.0);
    let a = assess(&Evidence {
        record: Some(&record),
        hold: Some(Hold::StageChange),
        ..inputs(&key, &NOTHING)
    });
    assert!(a.calibrated);
    assert_eq!(a.per_pod_rps, Some(700.0));
}
