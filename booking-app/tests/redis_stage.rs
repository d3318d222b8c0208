//! Stage redis beyond the shared suite: the write-behind syncer crashing between its steps (in
//! process, and as a SIGKILLed `booking-app worker`), the inventory rebuilt after Redis lost an
//! event, and the stream-lag gauge. Each test uses its own key prefix, so no other syncer helps.

mod common;
mod redis_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use booking_app::domain::{Booking, RejectReason};
use booking_app::stage::{Inventory, StageError};
use booking_app::worker::redis_sync::write_batch;
use futures::StreamExt;
use redis_support::{Isolated, assert_postgres_consistent, confirmed_in_db};
use uuid::Uuid;

use crate::common::EVENTUAL;

/// `count` bookings at 32 at a time: users u0..u39, quantities 1..=3, every third one with an
/// idempotency key. Returns the confirmed ones.
async fn sell(fx: &Isolated, event: Uuid, count: usize) -> BTreeMap<Uuid, Booking> {
    let answers: Vec<_> = futures::stream::iter(0..count)
        .map(|i| async move {
            let key = (i % 3 == 0).then(|| format!("{event}-{i}"));
            fx.book(
                event,
                &format!("u{}", i % 40),
                (i % 3) as i32 + 1,
                key.as_deref(),
            )
            .await
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut confirmed = BTreeMap::new();
    for answer in answers {
        match answer {
            Ok(b) => {
                confirmed.insert(b.id, b);
            }
            Err(StageError::Rejected { .. }) => {}
            Err(other) => panic!("booking failed: {other}"),
        }
    }
    confirmed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn syncer_crash_between_commit_and_ack_writes_nothing_twice() {
    common::init_logs();
    let fx = Isolated::new("sync-crash").await;
    let event = fx.event(200, Some(6)).await;
    let confirmed = sell(&fx, event.id, 60).await;
    assert_eq!(
        confirmed.len(),
        60,
        "200 tickets and a limit no user reaches: all confirmed"
    );
    assert_eq!(
        fx.stream_len(event.id).await,
        60,
        "every booking is streamed"
    );

    // Syncer "a": commits one batch and dies before acknowledging it; reads a second batch and
    // dies before writing it.
    let mut a = fx.syncer("a", 10);
    let first = a.read(&[event.id], ">", None).await.expect("read");
    let written = write_batch(&fx.pool, &first[0]).await.expect("write");
    assert_eq!(written.inserted, 10);
    let second = a.read(&[event.id], ">", None).await.expect("read");
    assert_eq!(second[0].entry_ids.len(), 10);
    drop(a);
    assert_eq!(
        fx.pending(event.id).await,
        20,
        "both batches are delivered and unacknowledged"
    );

    // Syncer "b" (another pod) takes both batches over once they are idle, writes the second,
    // re-writes the first without effect, and syncs the rest.
    let mut b = fx.syncer("b", 10);
    let expected: BTreeSet<Uuid> = confirmed.keys().copied().collect();
    fx.sync_until(&mut b, event.id, &expected).await;
    assert_eq!(fx.pending(event.id).await, 0);
    assert_postgres_consistent(&fx.pool, &event, &confirmed).await;
    // Refusals kept for their key reach Postgres too, once.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = $1")
        .bind(event.id)
        .fetch_one(&fx.pool)
        .await
        .unwrap();
    let keyed_refusals: i64 =
        sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = $1 AND status = 'rejected' AND idempotency_key IS NOT NULL")
            .bind(event.id)
            .fetch_one(&fx.pool)
            .await
            .unwrap();
    assert_eq!(rows, confirmed.len() as i64 + keyed_refusals);
    fx.cleanup().await;
}

/// Spawns `booking-app worker --stage redis` over the fixture's prefix, logging to a file.
fn spawn_worker(
    fx: &Isolated,
    consumer: &str,
    log: &std::path::Path,
    extra: &[&str],
) -> tokio::process::Child {
    let log = std::fs::File::create(log).expect("worker log file");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_booking-app"))
        .args(["worker", "--stage", "redis", "--migrate-on-start", "false"])
        .args(extra)
        .env("DATABASE_URL", &fx.config.postgres.database_url)
        .env("REDIS_URL", fx.config.redis.redis_url.as_deref().unwrap())
        .env("REDIS_KEY_PREFIX", fx.keys.prefix())
        .env("SYNC_CONSUMER", consumer)
        .env("SYNC_BATCH_SIZE", "5")
        .env("SYNC_BLOCK_MS", "200")
        .env("SYNC_CLAIM_IDLE_MS", "1000")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn booking-app worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_process_killed_mid_sync_resumes_without_loss() {
    common::init_logs();
    let fx = Isolated::new("worker-kill").await;
    let event = fx.event(100_000, None).await;
    let confirmed = sell(&fx, event.id, 1500).await;
    assert_eq!(confirmed.len(), 1500);
    let expected: BTreeSet<Uuid> = confirmed.keys().copied().collect();
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));

    // The worker starts on a backlog of 1500. Once it has written some, the test locks the
    // event's row, so the worker's next batch stops inside its transaction; then SIGKILL.
    let first_log = logs.join(format!("worker-{}-1.log", event.id));
    let mut worker = spawn_worker(&fx, "worker-pod-0", &first_log, &[]);
    let alive = |worker: &mut tokio::process::Child, log: &std::path::Path| {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "the worker exited (log: {})",
            log.display()
        );
    };
    let started = Instant::now();
    while confirmed_in_db(&fx.pool, event.id).await.is_empty() {
        assert!(
            started.elapsed() < EVENTUAL,
            "the worker wrote nothing (log: {})",
            first_log.display()
        );
        alive(&mut worker, &first_log);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut lock = fx.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM events WHERE id = $1 FOR UPDATE")
        .bind(event.id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let started = Instant::now();
    while !batch_waits_on_lock(&fx).await {
        assert!(
            started.elapsed() < EVENTUAL,
            "the worker's batch never reached the event row"
        );
        alive(&mut worker, &first_log);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before_kill = confirmed_in_db(&fx.pool, event.id).await.len();
    worker.start_kill().expect("SIGKILL the worker");
    worker.wait().await.expect("reap the worker");
    lock.rollback().await.unwrap();
    let pending = fx.pending(event.id).await;
    assert!(
        pending > 0,
        "the killed batch must be left delivered and unacknowledged"
    );
    // The half-done batch's transaction dies with its connection: nothing of it is committed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let at_kill = confirmed_in_db(&fx.pool, event.id).await.len();
    assert_eq!(
        at_kill, before_kill,
        "the killed batch must not be committed"
    );
    eprintln!(
        "killed mid-batch with {at_kill} of 1500 bookings in Postgres, {pending} entries unacknowledged"
    );

    // The container restarts under the same pod name: it resumes its own pending entries first.
    let second_log = logs.join(format!("worker-{}-2.log", event.id));
    let mut worker = spawn_worker(&fx, "worker-pod-0", &second_log, &[]);
    let started = Instant::now();
    loop {
        let stored = confirmed_in_db(&fx.pool, event.id).await;
        if stored.len() == expected.len() && fx.stream_len(event.id).await == 0 {
            break;
        }
        assert!(
            started.elapsed() < EVENTUAL,
            "{} of 1500 synced (log: {})",
            stored.len(),
            second_log.display()
        );
        alive(&mut worker, &second_log);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.start_kill().expect("stop the worker");
    worker.wait().await.expect("reap the worker");
    assert_eq!(fx.pending(event.id).await, 0);
    assert_postgres_consistent(&fx.pool, &event, &confirmed).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn worker_drain_writes_every_entry_then_exits() {
    common::init_logs();
    let fx = Isolated::new("drain").await;
    let event = fx.event(1000, None).await;
    let confirmed = sell(&fx, event.id, 200).await;
    // A syncer that vanished with a batch: the drain must not wait for it to look abandoned.
    let mut ghost = fx.syncer("ghost", 10);
    ghost.read(&[event.id], ">", None).await.expect("read");
    drop(ghost);
    assert_eq!(fx.pending(event.id).await, 10);

    let log =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("drain-{}.log", event.id));
    let mut worker = spawn_worker(&fx, "drain-job", &log, &["--drain"]);
    let status = tokio::time::timeout(EVENTUAL, worker.wait())
        .await
        .unwrap_or_else(|_| panic!("the drain did not finish (log: {})", log.display()))
        .expect("reap the worker");
    assert!(
        status.success(),
        "the drain exited with {status} (log: {})",
        log.display()
    );
    assert_eq!(fx.stream_len(event.id).await, 0);
    assert_eq!(fx.pending(event.id).await, 0);
    assert_postgres_consistent(&fx.pool, &event, &confirmed).await;
    fx.cleanup().await;
}

/// True while a syncer's batch statement waits for a row lock (the test holds the event's row).
async fn batch_waits_on_lock(fx: &Isolated) -> bool {
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%unnest%INSERT INTO bookings%'",
    )
    .fetch_one(&fx.pool)
    .await
    .unwrap();
    waiting > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_after_redis_lost_an_event_does_not_resell() {
    common::init_logs();
    let fx = Isolated::new("rebuild").await;
    let event = fx.event(120, Some(6)).await;
    let mut confirmed = sell(&fx, event.id, 40).await;
    assert_eq!(
        confirmed.len(),
        40,
        "one booking per user, all within stock and limit"
    );
    let sold: i64 = confirmed.values().map(|b| i64::from(b.quantity)).sum();

    // Part of it reaches Postgres; the rest is still only in the stream.
    let mut syncer = fx.syncer("rebuild", 10);
    let batch = syncer
        .read(&[event.id], ">", None)
        .await
        .expect("read")
        .remove(0);
    write_batch(&fx.pool, &batch).await.expect("write");
    syncer.ack(&batch).await.expect("ack");
    assert!(fx.stream_len(event.id).await > 0);

    // Redis loses the event's counter, holdings and idempotency answers; the stream survives.
    fx.lose_event(event.id, false).await;
    let rebuilt = fx
        .inventory
        .get_event(event.id)
        .await
        .expect("event reloads");
    assert_eq!(
        rebuilt.remaining,
        event.tickets - sold,
        "the rebuild must count the unsynced bookings"
    );

    // Keys answered before the loss replay their first answer, synced or not (`sell` gave user
    // u{i} the key "{event}-{i}" when i % 3 == 0).
    let by_user: BTreeMap<&str, &Booking> = confirmed
        .values()
        .map(|b| (b.user_id.as_str(), b))
        .collect();
    for i in (0..40).step_by(3) {
        let first = by_user[format!("u{i}").as_str()];
        let replay = fx
            .book(
                event.id,
                &first.user_id,
                first.quantity,
                Some(&format!("{}-{i}", event.id)),
            )
            .await
            .expect("replay");
        assert_eq!(
            replay.id, first.id,
            "a key answered before the loss booked again"
        );
    }
    // Holdings came back too: whatever u1 holds, enough more to pass the limit of 6 is refused.
    let held = by_user["u1"].quantity;
    match fx.book(event.id, "u1", 7 - held, None).await {
        Err(StageError::Rejected {
            reason: RejectReason::PerUserLimit,
            ..
        }) => {}
        other => panic!(
            "u1 holds {held}; {} more must exceed the limit of 6: {other:?}",
            7 - held
        ),
    }

    // Everything synced, then Redis loses the event entirely: Postgres alone is the truth.
    let extra = fx
        .book(event.id, "late", 2, Some(&format!("late-{}", event.id)))
        .await
        .expect("book");
    confirmed.insert(extra.id, extra.clone());
    let expected: BTreeSet<Uuid> = confirmed.keys().copied().collect();
    fx.sync_until(&mut syncer, event.id, &expected).await;
    fx.lose_event(event.id, true).await;
    let rebuilt = fx
        .inventory
        .get_event(event.id)
        .await
        .expect("event reloads");
    assert_eq!(rebuilt.remaining, event.tickets - sold - 2);
    let replay = fx
        .book(event.id, "late", 2, Some(&format!("late-{}", event.id)))
        .await
        .expect("replay");
    assert_eq!(
        replay.id, extra.id,
        "the key's answer is restored from Postgres"
    );
    assert_postgres_consistent(&fx.pool, &event, &confirmed).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_lag_is_exported_on_metrics() {
    common::init_logs();
    let fx = Isolated::new("lag").await;
    let event = fx.event(10, None).await;
    let confirmed = sell(&fx, event.id, 3).await;
    let wait_for = |line: String| {
        let metrics = fx.metrics.clone();
        async move {
            let started = Instant::now();
            loop {
                let text = metrics.encode().expect("metrics encode");
                if text.lines().any(|l| l == line) {
                    return;
                }
                assert!(started.elapsed() < EVENTUAL, "no `{line}` in\n{text}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for("booking_redis_stream_lag 3".into()).await;
    let mut syncer = fx.syncer("lag", 100);
    fx.sync_until(&mut syncer, event.id, &confirmed.keys().copied().collect())
        .await;
    wait_for("booking_redis_stream_lag 0".into()).await;
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sold_out_and_synced_events_are_no_longer_watched() {
    common::init_logs();
    let fx = Isolated::new("finished").await;
    let open = fx.event(100, None).await;
    let sold_out = fx.event(6, None).await;
    let mut confirmed = sell(&fx, sold_out.id, 3).await;
    confirmed.extend(sell(&fx, open.id, 3).await);
    assert_eq!(
        fx.inventory.get_event(sold_out.id).await.unwrap().remaining,
        0,
        "1+2+3 tickets: sold out"
    );
    let watched = |id: Uuid| {
        let mut redis = fx.redis.clone();
        let index = fx.keys.event_index();
        async move {
            redis::cmd("SISMEMBER")
                .arg(index)
                .arg(id.to_string())
                .query_async::<bool>(&mut redis)
                .await
                .unwrap()
        }
    };
    let mut syncer = fx.syncer("finished", 100);
    let started = Instant::now();
    while watched(sold_out.id).await {
        assert!(
            started.elapsed() < EVENTUAL,
            "the sold-out event is still watched"
        );
        syncer.pass().await.expect("sync pass");
    }
    assert!(
        watched(open.id).await,
        "an event with tickets left stays watched"
    );
    assert_eq!(
        fx.stream_len(sold_out.id).await,
        0,
        "forgotten only once synced"
    );
    let in_db = confirmed_in_db(&fx.pool, sold_out.id).await;
    assert_eq!(in_db.len(), 3);
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn confirmed_booking_is_readable_before_and_after_the_sync() {
    common::init_logs();
    let fx = Isolated::new("read").await;
    let other = fx.event(10, None).await; // another watched event: the lookup asks them all
    let event = fx.event(10, None).await;
    fx.book(other.id, "bob", 1, None).await.expect("book");
    let booking = fx.book(event.id, "alice", 2, None).await.expect("book");
    assert!(
        confirmed_in_db(&fx.pool, event.id).await.is_empty(),
        "no syncer runs yet"
    );
    assert_eq!(
        fx.inventory
            .get_booking(booking.id)
            .await
            .expect("read before the sync"),
        booking
    );
    assert!(matches!(
        fx.inventory.get_booking(Uuid::new_v4()).await,
        Err(StageError::BookingNotFound(_))
    ));

    let mut syncer = fx.syncer("read", 100);
    fx.sync_until(&mut syncer, event.id, &[booking.id].into())
        .await;
    let unsynced: i64 = redis::cmd("HLEN")
        .arg(fx.keys.event(event.id).unsynced)
        .query_async(&mut fx.redis.clone())
        .await
        .unwrap();
    assert_eq!(unsynced, 0, "the copy leaves Redis with its stream entry");
    assert_eq!(
        fx.inventory
            .get_booking(booking.id)
            .await
            .expect("read after the sync"),
        booking
    );
    fx.cleanup().await;
}

/// A command Redis executed, as MONITOR reports it: who sent it (`lua` for a script's own calls)
/// and the command's name.
struct Monitored {
    from_script: bool,
    command: String,
}

/// Parses one MONITOR line, `<time> [<db> <client>] "<COMMAND>" "<arg>"...`.
fn monitored(line: &str) -> Option<Monitored> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let from_script = line[open + 1..close].split_whitespace().nth(1) == Some("lua");
    let rest = line[close + 1..].trim_start().strip_prefix('"')?;
    let command = rest[..rest.find('"')?].to_ascii_uppercase();
    Some(Monitored {
        from_script,
        command,
    })
}

/// Every command that touches this test's keys, from a MONITOR started before `work`, up to a
/// marker sent after it (MONITOR reports in execution order, so nothing of `work` comes later).
async fn commands_during(
    fx: &Isolated,
    work: impl std::future::Future<Output = ()>,
) -> Vec<Monitored> {
    let client =
        redis::Client::open(fx.config.redis.redis_url.as_deref().unwrap()).expect("REDIS_URL");
    let monitor = client.get_async_monitor().await.expect("MONITOR");
    let mut lines = Box::pin(monitor.into_on_message::<String>());
    work.await;
    let marker = format!("{}:marker-{}", fx.keys.prefix(), Uuid::new_v4());
    let _: bool = redis::cmd("EXISTS")
        .arg(&marker)
        .query_async(&mut fx.redis.clone())
        .await
        .expect("EXISTS");
    let mut seen = Vec::new();
    let started = Instant::now();
    loop {
        let line = tokio::time::timeout(EVENTUAL, lines.next())
            .await
            .expect("MONITOR went quiet before the marker")
            .expect("MONITOR ended");
        if line.contains(&marker) {
            return seen;
        }
        assert!(
            started.elapsed() < EVENTUAL,
            "no marker in MONITOR after {EVENTUAL:?}"
        );
        if line.contains(fx.keys.prefix()) {
            seen.push(monitored(&line).unwrap_or_else(|| panic!("unparsed MONITOR line: {line}")));
        }
    }
}

/// With `appendfsync always` every writing round trip costs an fsync: a keyed booking must be
/// one script call, its key's claim included (it used to be a `SET … NX GET EX` first).
/// MONITOR, filtered by this test's key prefix, rather than INFO commandstats: the Redis is
/// shared, and other tests' bookings would count there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keyed_booking_is_one_script_call() {
    common::init_logs();
    let fx = Isolated::new("one-call").await;
    let event = fx.event(1000, None).await;
    let other = fx.event(1000, None).await;
    const N: usize = 12;
    let key = |i: usize| format!("one-call-{}-{i}", event.id);
    let mut first = Vec::new();
    let seen = commands_during(&fx, async {
        for i in 0..N {
            first.push(
                fx.book(event.id, &format!("u{i}"), 1, Some(&key(i)))
                    .await
                    .expect("book"),
            );
        }
        for (i, booking) in first.iter().enumerate() {
            let replay = fx
                .book(event.id, &format!("u{i}"), 1, Some(&key(i)))
                .await
                .expect("replay");
            assert_eq!(
                replay.id, booking.id,
                "the same request gets the first answer"
            );
        }
        fx.book(event.id, "anonymous", 1, None)
            .await
            .expect("book without a key");
        match fx.book(other.id, "u0", 1, Some(&key(0))).await {
            Err(StageError::IdempotencyKeyReused) => {}
            other => panic!("a key bound to another event must be refused: {other:?}"),
        }
    })
    .await;

    // The stream-lag sampler reads (SMEMBERS, XLEN) every 2 s; everything else the client sent
    // is one EVALSHA per booking: N first uses, N replays, one without a key, one reuse.
    let sent: Vec<&str> = seen
        .iter()
        .filter(|c| !c.from_script && !matches!(c.command.as_str(), "SMEMBERS" | "XLEN"))
        .map(|c| c.command.as_str())
        .collect();
    assert_eq!(
        sent,
        vec!["EVALSHA"; 2 * N + 2],
        "one round trip per booking, keyed or not"
    );
    // Inside the script: each key is claimed once, on first use; replays and the refused reuse
    // only read the claim.
    let claims = seen
        .iter()
        .filter(|c| c.from_script && c.command == "SET")
        .count();
    assert_eq!(claims, N, "one claim per key");
    let mut redis = fx.redis.clone();
    let claim = fx.keys.key_claim(&key(0));
    let bound: String = redis::cmd("GET")
        .arg(&claim)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        bound,
        event.id.to_string(),
        "the claim names the key's first event"
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&claim)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        (24 * 3600 - 60..=24 * 3600).contains(&ttl),
        "the claim lasts 24 h, TTL is {ttl}"
    );
    assert_eq!(
        fx.inventory.get_event(other.id).await.unwrap().remaining,
        1000,
        "the reuse booked nothing"
    );
    let claims_in_redis: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:idempotency-key:*", fx.keys.prefix()))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        claims_in_redis.len(),
        N,
        "the booking without a key claims nothing"
    );
    fx.cleanup().await;
}

/// The first run of the script on an event Redis does not have answers "missing" and claims
/// nothing; the run after the load claims the key for this event. A key bound to another event is
/// refused; one sent with an event that does not exist claims nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_claimed_by_a_missing_event_run_books_on_the_retry() {
    common::init_logs();
    let fx = Isolated::new("missing-claim").await;
    let event = fx.event(10, None).await;
    let other = fx.event(10, None).await;
    fx.lose_event(event.id, true).await;
    fx.lose_event(other.id, true).await;

    let key = format!("missing-{}", event.id);
    let booked = fx
        .book(event.id, "alice", 2, Some(&key))
        .await
        .expect("the retry after the load books");
    let bound: String = redis::cmd("GET")
        .arg(fx.keys.key_claim(&key))
        .query_async(&mut fx.redis.clone())
        .await
        .unwrap();
    assert_eq!(bound, event.id.to_string());
    let replay = fx
        .book(event.id, "alice", 2, Some(&key))
        .await
        .expect("replay");
    assert_eq!(replay.id, booked.id);
    assert_eq!(fx.inventory.get_event(event.id).await.unwrap().remaining, 8);

    match fx.book(other.id, "alice", 2, Some(&key)).await {
        Err(StageError::IdempotencyKeyReused) => {}
        answer => panic!("the key is bound to the first event: {answer:?}"),
    }

    // A key is claimed only for an event that exists: a made-up event leaves no claim behind.
    let unclaimed = format!("nowhere-{}", event.id);
    match fx.book(Uuid::new_v4(), "alice", 1, Some(&unclaimed)).await {
        Err(StageError::EventNotFound(_)) => {}
        answer => panic!("no such event: {answer:?}"),
    }
    let claim: Option<String> = redis::cmd("GET")
        .arg(fx.keys.key_claim(&unclaimed))
        .query_async(&mut fx.redis.clone())
        .await
        .unwrap();
    assert_eq!(claim, None, "no claim for an event that does not exist");
    fx.cleanup().await;
}

/// A stream entry whose idempotency key another booking already holds in Postgres (the key was
/// used for another event after Redis forgot its claim) is written without the key, and the
/// rest of its batch with theirs: the batch's one-statement insert is refused by the unique
/// index, and the batch is written again with the taken keys dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_with_a_key_taken_in_postgres_is_written_without_that_key() {
    use booking_app::domain::BookingRequest;
    use booking_app::stage::redis::load::StreamBooking;
    use booking_app::worker::redis_sync::{Batch, Written};
    use chrono::SubsecRound;

    common::init_logs();
    let fx = Isolated::new("key-taken").await;
    let first_event = fx.event(10, None).await;
    let event = fx.event(10, None).await;
    let key = format!("taken-{}", Uuid::new_v4());
    let other_key = format!("free-{}", Uuid::new_v4());
    let booking = |event: Uuid, user: &str| {
        let request = BookingRequest {
            user_id: user.into(),
            quantity: 1,
        };
        Booking::confirmed(
            Uuid::new_v4(),
            event,
            &request,
            chrono::Utc::now().trunc_subsecs(6),
        )
    };
    let batch = |event: Uuid, entries: Vec<(Booking, Option<&str>)>| Batch {
        event_id: event,
        entry_ids: (0..entries.len()).map(|i| format!("0-{}", i + 1)).collect(),
        bookings: entries
            .into_iter()
            .map(|(booking, key)| StreamBooking {
                booking,
                idempotency_key: key.map(str::to_owned),
            })
            .collect(),
    };
    let holder = booking(first_event.id, "alice");
    let written = write_batch(
        &fx.pool,
        &batch(first_event.id, vec![(holder.clone(), Some(&key))]),
    )
    .await
    .expect("write");
    assert_eq!(
        written,
        Written {
            inserted: 1,
            keys_dropped: 0
        }
    );

    let (late, free) = (booking(event.id, "bob"), booking(event.id, "carol"));
    let mixed = batch(
        event.id,
        vec![(late.clone(), Some(&key)), (free.clone(), Some(&other_key))],
    );
    let written = write_batch(&fx.pool, &mixed).await.expect("write");
    assert_eq!(
        written,
        Written {
            inserted: 2,
            keys_dropped: 1
        }
    );
    // Delivered again (a crash before the ack): nothing more, and the rows already there raise no
    // conflict to look the keys up for.
    assert_eq!(
        write_batch(&fx.pool, &mixed).await.expect("write again"),
        Written {
            inserted: 0,
            keys_dropped: 0
        }
    );

    let key_of = |id: Uuid| {
        let pool = fx.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT idempotency_key FROM bookings WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("the booking is in Postgres")
        }
    };
    assert_eq!(
        key_of(holder.id).await,
        Some(key.clone()),
        "the key stays with its first booking"
    );
    assert_eq!(
        key_of(late.id).await,
        None,
        "the later booking is kept, without the key"
    );
    assert_eq!(key_of(free.id).await, Some(other_key.clone()));
    let in_db = confirmed_in_db(&fx.pool, event.id).await;
    assert_eq!(in_db.len(), 2, "both tickets of the batch are real");
    let remaining: i64 = sqlx::query_scalar("SELECT remaining FROM events WHERE id = $1")
        .bind(event.id)
        .fetch_one(&fx.pool)
        .await
        .unwrap();
    assert_eq!(remaining, 8);
    fx.cleanup().await;
}

/// A refusal kept for its key lives in the key's claim, with the claim's expiry
/// (IDEMPOTENCY_RETENTION), not in the event's idempotency hash, whose fields cannot expire: the
/// hash holds only confirmed answers. After Redis lost the event and the claim, the rebuild puts
/// the refusal (from Postgres) back into the claim for what is left of its retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_is_kept_in_its_expiring_claim_and_restored_after_a_loss() {
    common::init_logs();
    let fx = Isolated::new("refusal-claim").await;
    let event = fx.event(1, None).await;
    let key = format!("refused-{}", event.id);
    let refused = fx.book(event.id, "alice", 2, Some(&key)).await;
    assert!(
        matches!(
            refused,
            Err(StageError::Rejected {
                reason: RejectReason::SoldOut,
                ..
            })
        ),
        "{refused:?}"
    );
    let confirmed = fx
        .book(event.id, "bob", 1, Some(&format!("ok-{}", event.id)))
        .await
        .expect("bob books the ticket");

    let mut redis = fx.redis.clone();
    let claim = fx.keys.key_claim(&key);
    let claim_state = |mut redis: redis::aio::ConnectionManager| {
        let claim = claim.clone();
        async move {
            let value: Option<String> = redis::cmd("GET")
                .arg(&claim)
                .query_async(&mut redis)
                .await
                .unwrap();
            let ttl: i64 = redis::cmd("TTL")
                .arg(&claim)
                .query_async(&mut redis)
                .await
                .unwrap();
            (value, ttl)
        }
    };
    let (value, ttl) = claim_state(redis.clone()).await;
    let value = value.expect("the key is claimed");
    let (bound, answer) = value.split_once(' ').expect("`<event> <refusal>`");
    assert_eq!(bound, event.id.to_string());
    let answer: Booking = serde_json::from_str(answer).unwrap();
    assert_eq!(
        (answer.status, answer.reason),
        (
            booking_app::domain::BookingStatus::Rejected,
            Some(RejectReason::SoldOut)
        )
    );
    assert!(
        (24 * 3600 - 60..=24 * 3600).contains(&ttl),
        "the refusal expires with the claim (24 h by default), TTL is {ttl}"
    );
    let answers: Vec<String> = redis::cmd("HKEYS")
        .arg(fx.keys.event(event.id).idempotency)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        answers,
        [format!("ok-{}", event.id)],
        "the hash keeps only the confirmed answer"
    );

    // Written behind, then Redis loses the event and the claim.
    let mut syncer = fx.syncer("refusal-claim", 10);
    fx.sync_until(&mut syncer, event.id, &[confirmed.id].into())
        .await;
    fx.lose_event(event.id, true).await;
    let _: i64 = redis::cmd("DEL")
        .arg(&claim)
        .query_async(&mut redis)
        .await
        .unwrap();
    fx.inventory.get_event(event.id).await.expect("reloads");
    let (restored, ttl) = claim_state(redis.clone()).await;
    assert_eq!(
        restored.as_deref().map(|v| v.split_once(' ').unwrap().0),
        Some(event.id.to_string().as_str()),
        "the rebuild restores the refusal into its claim: {restored:?}"
    );
    assert!((1..=24 * 3600).contains(&ttl), "TTL {ttl}");
    let replay = fx.book(event.id, "alice", 2, Some(&key)).await;
    let Err(StageError::Rejected { detail, .. }) = replay else {
        panic!("the refusal is replayed: {replay:?}")
    };
    assert!(detail.contains(&answer.id.to_string()), "{detail}");
    let answers: i64 = redis::cmd("HLEN")
        .arg(fx.keys.event(event.id).idempotency)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        answers, 1,
        "the rebuild put only the confirmation in the hash"
    );
    fx.cleanup().await;
}

/// An event whose bookings Postgres refuses (here: Redis holds an event this database has no
/// row for, as when two databases share a Redis under one key prefix) does not stop the
/// write-behind of the other events; its entries stay in its stream, and are written once the
/// event row exists. The syncer runs as `worker` runs it (`Syncer::run`, retrying failed passes),
/// and the refused event is first in the index (a small set keeps insertion order), so its batch
/// comes first in every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_postgres_refuses_does_not_stop_the_others() {
    common::init_logs();
    let fx = Isolated::new("parked").await;
    let orphan = Uuid::new_v4();
    let mut redis = fx.redis.clone();
    let _: i64 = redis::cmd("SADD")
        .arg(fx.keys.event_index())
        .arg(orphan.to_string())
        .query_async(&mut redis)
        .await
        .expect("SADD");
    let good = fx.event(100, None).await;
    let confirmed = sell(&fx, good.id, 4).await;

    // A decision for the event Postgres does not know.
    let mut refused = confirmed.values().next().expect("a booking").clone();
    refused.id = Uuid::now_v7();
    refused.event_id = orphan;
    let _: String = redis::cmd("XADD")
        .arg(fx.keys.event(orphan).stream)
        .arg("*")
        .arg("booking")
        .arg(serde_json::to_string(&refused).unwrap())
        .query_async(&mut redis)
        .await
        .expect("XADD");

    let stop = tokio_util::sync::CancellationToken::new();
    let syncer = tokio::spawn(fx.syncer("parked", 100).run(stop.clone()));
    let in_db = |event: Uuid, want: usize| {
        let pool = fx.pool.clone();
        async move {
            let started = Instant::now();
            loop {
                let stored = confirmed_in_db(&pool, event).await;
                if stored.len() >= want {
                    return stored;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "event {event}: Postgres has {} of {want} bookings after 20 s",
                    stored.len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let stored = in_db(good.id, confirmed.len()).await;
    assert_eq!(
        stored.keys().copied().collect::<BTreeSet<_>>(),
        confirmed.keys().copied().collect::<BTreeSet<_>>()
    );
    assert_eq!(fx.stream_len(orphan).await, 1, "the refused entry is kept");

    // Mended: the event row appears. After its backoff the parked entry is written.
    sqlx::query(
        "INSERT INTO events (id, name, tickets, remaining, per_user_limit) VALUES ($1, 'late', 10, 10, NULL)",
    )
    .bind(orphan)
    .execute(&fx.pool)
    .await
    .expect("insert the missing event");
    let stored = in_db(orphan, 1).await;
    assert!(stored.contains_key(&refused.id));
    stop.cancel();
    syncer.await.expect("syncer task");
    fx.cleanup().await;
}
