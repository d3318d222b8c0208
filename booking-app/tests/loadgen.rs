//! loadgen against a real booking-app (stage postgres, over `hack/services.sh`): a short sale in
//! each mode passes the invariant check, the checker catches a sale whose numbers do not add up,
//! and `--find-capacity` writes the operator's termination message. No timing is asserted.

mod common;

use booking_app::domain::{NewEvent, Stage};
use booking_app::loadgen::client::{Answer, Refusal, booking_body};
use booking_app::loadgen::invariants::{Attempt, Ledger, Violation};
use booking_app::loadgen::settle::{Baseline, SettleOptions, settle};
use booking_app::loadgen::{LoadgenArgs, RunResult, Session};
use clap::Parser;
use common::TestApp;
use flashsale_contract::CalibrationResult;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: LoadgenArgs,
}

fn args(app: &TestApp, extra: &[&str]) -> LoadgenArgs {
    let base = [
        "loadgen",
        "--url",
        app.base_url.as_str(),
        "--json",
        "--no-progress",
        "--warmup",
        "0s",
    ];
    let auth = common::auth::loadgen_flags();
    let auth = auth.iter().map(String::as_str);
    Cli::parse_from(
        base.iter()
            .copied()
            .chain(auth)
            .chain(extra.iter().copied()),
    )
    .args
}

/// A sale with `extra` flags against a fresh app on `stage`; panics unless its invariants were
/// checked and hold.
async fn sale_holding_invariants(stage: Stage, extra: &[&str]) -> RunResult {
    let app = TestApp::spawn(stage).await;
    let run = Session::new(args(&app, extra))
        .unwrap()
        .sale()
        .await
        .unwrap();
    let inv = run
        .invariants
        .as_ref()
        .expect("invariants are checked by default");
    assert!(inv.ok, "{inv}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_loop_sale_sells_out_and_holds_the_invariants() {
    // 200 users x limit 4 can ask for 800 tickets: the 300 sell out within the run.
    let run = sale_holding_invariants(
        Stage::Postgres,
        &[
            "--tickets",
            "300",
            "--per-user-limit",
            "4",
            "--users",
            "200",
            "--max-quantity",
            "3",
            "--concurrency",
            "16",
            "--duration",
            "3s",
        ],
    )
    .await;
    let inv = run.invariants.as_ref().unwrap();
    assert!(run.report.requests > 0);
    assert!(
        run.report.answers.contains_key("201 confirmed"),
        "{:?}",
        run.report.answers
    );
    assert_eq!(inv.observed.tickets, 300);
    assert_eq!(
        inv.observed.remaining_after,
        300 - inv.observed.confirmed_quantity
    );
    assert_eq!(run.report.errors, 0, "{:?}", run.report.answers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_loop_sale_holds_the_invariants() {
    let run = sale_holding_invariants(
        Stage::Postgres,
        &[
            "--tickets",
            "100000",
            "--rate",
            "200",
            "--concurrency",
            "32",
            "--duration",
            "2s",
        ],
    )
    .await;
    let inv = run.invariants.as_ref().unwrap();
    assert_eq!(run.report.offered_rate(), Some(200.0));
    // Every due request was sent or counted as missed: 2 s at 200/s is 401 due sends.
    assert_eq!(run.report.requests + run.report.missed_sends, 401);
    assert!(inv.observed.confirmed_quantity > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_check_flags_tickets_sold_behind_its_back() {
    let app = TestApp::spawn(Stage::Postgres).await;
    let session = Session::new(args(&app, &[])).unwrap();
    let client = session.client();
    let event = client
        .create_event(&NewEvent {
            name: "checker".into(),
            tickets: 10,
            per_user_limit: Some(2),
        })
        .await
        .unwrap();
    let url = client.bookings_url(event.id).unwrap();
    let book = |user: &str, quantity| {
        let bearer = client.bearer_named(user);
        let body = booking_body(user.into(), quantity);
        let url = &url;
        async move { client.book(url, body, None, bearer.as_deref()).await }
    };
    assert_eq!(book("user-1", 2).await, Answer::Confirmed);
    assert_eq!(
        book("user-2", 3).await,
        Answer::Refused(Refusal::PerUserLimit)
    );
    let options = SettleOptions {
        pending_timeout: std::time::Duration::from_secs(5),
        concurrency: 4,
    };
    let baseline = Baseline {
        event: event.clone(),
        first_pending_at: None,
    };

    // The ledger that saw the booking agrees with the store.
    let mut seen = Ledger::default();
    seen.note(
        Attempt {
            index: 0,
            user: 1,
            quantity: 2,
        },
        &Answer::Confirmed,
    );
    let report = settle(client, &baseline, seen.clone(), None, options)
        .await
        .unwrap();
    assert!(report.ok, "{report}");

    // A ledger that missed it (a booking made behind loadgen's back) does not.
    let report = settle(client, &baseline, Ledger::default(), None, options)
        .await
        .unwrap();
    assert!(!report.ok);
    assert_eq!(
        report.violations,
        vec![Violation::RemainingMismatch {
            expected_min: 10,
            expected_max: 10,
            actual: 8
        }]
    );

    // Confirmations beyond the tickets, as a broken stage would give them, are overselling.
    let mut oversold = seen;
    for index in 1..=5 {
        oversold.note(
            Attempt {
                index,
                user: 10 + index as u32,
                quantity: 2,
            },
            &Answer::Confirmed,
        );
    }
    let report = settle(client, &baseline, oversold, None, options)
        .await
        .unwrap();
    assert!(
        report.violations.contains(&Violation::Oversold {
            tickets: 10,
            sold: 12
        }),
        "{report}"
    );
}

/// `loadgen --find-capacity` against `stage` with a generous SLO and a low ceiling (the search
/// ends at --max-rate in three short steps); returns the termination message it wrote.
async fn find_capacity_termination_message(stage: Stage) -> (CalibrationResult, Vec<String>) {
    let app = TestApp::spawn(stage).await;
    let dir = std::env::temp_dir().join(format!("loadgen-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("termination-log");
    let a = args(
        &app,
        &[
            "--find-capacity",
            "--slo-p99-ms",
            "10000",
            "--rate",
            "50",
            "--max-rate",
            "200",
            "--duration",
            "1s",
            "--termination-message-path",
            path.to_str().unwrap(),
        ],
    );
    booking_app::loadgen::run(a).await.unwrap();
    let message = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_dir_all(dir).ok();
    let calibration: CalibrationResult = serde_json::from_str(&message).unwrap();
    assert_eq!(calibration.slo_p99_ms, 10_000);
    assert!(
        calibration.per_pod_rps > 0.0 && calibration.per_pod_rps <= 200.0,
        "{message}"
    );
    let fields: serde_json::Value = serde_json::from_str(&message).unwrap();
    let mut keys: Vec<_> = fields.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    (calibration, keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn find_capacity_writes_the_operators_termination_message() {
    let (_, keys) = find_capacity_termination_message(Stage::Postgres).await;
    assert_eq!(
        keys,
        ["errorRate", "p99Ms", "perPodRps", "sloP99Ms"],
        "nothing is queued: no drain rate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn find_capacity_at_stage_kafka_also_measures_the_drain_rate() {
    let (calibration, keys) = find_capacity_termination_message(Stage::Kafka).await;
    assert_eq!(
        keys,
        ["drainRps", "errorRate", "p99Ms", "perPodRps", "sloP99Ms"]
    );
    let drain = calibration.drain_rps.unwrap();
    // The worker decided every queued request of some step: a real, positive rate.
    assert!(drain.is_finite() && drain > 0.0, "{calibration:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kafka_sale_follows_every_pending_booking_to_its_decision() {
    let run = sale_holding_invariants(
        Stage::Kafka,
        &[
            "--tickets",
            "200",
            "--per-user-limit",
            "3",
            "--users",
            "100",
            "--concurrency",
            "8",
            "--duration",
            "2s",
        ],
    )
    .await;
    let inv = run.invariants.as_ref().unwrap();
    assert!(
        inv.pending_total > 0,
        "stage kafka answers 202: {:?}",
        run.report.answers
    );
    assert_eq!(inv.observed.pending_unresolved, 0);
    // Every 202 was decided: confirmed ones are counted, the rest were refused by the worker.
    assert_eq!(
        inv.confirmed_bookings + inv.rejected_bookings,
        run.report.requests
    );
    assert_eq!(
        inv.observed.remaining_after,
        200 - inv.observed.confirmed_quantity
    );
}
