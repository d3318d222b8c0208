//! Invariants checked in Postgres itself, behind the API: what a stage wrote to the source of
//! truth (directly, written behind, or decided by a worker).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use uuid::Uuid;

use super::{EVENTUAL, TestApp};

/// A confirmed booking as stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredBooking {
    pub id: Uuid,
    pub user_id: String,
    pub quantity: i32,
}

impl TestApp {
    pub async fn confirmed_in_db(&self, event_id: Uuid) -> Vec<StoredBooking> {
        let rows: Vec<(Uuid, String, i32)> = sqlx::query_as(
            "SELECT id, user_id, quantity FROM bookings WHERE event_id = $1 AND status = 'confirmed' ORDER BY id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await
        .expect("query confirmed bookings");
        rows.into_iter()
            .map(|(id, user_id, quantity)| StoredBooking {
                id,
                user_id,
                quantity,
            })
            .collect()
    }

    /// Every booking row of the event, whatever its status.
    pub async fn bookings_in_db(&self, event_id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM bookings WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
            .expect("count bookings")
    }

    pub async fn events_named(&self, name: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .expect("count events")
    }

    /// Bookings stored under `user`'s `Idempotency-Key` `key` (stored scoped to the user).
    pub async fn rows_with_key(&self, user: &str, key: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM bookings WHERE idempotency_key = $1")
            .bind(booking_app::stage::idempotency::scoped(user, key))
            .fetch_one(&self.pool)
            .await
            .expect("count bookings by key")
    }

    /// Waits until Postgres holds exactly `expected` as the event's confirmed bookings (stage
    /// redis writes them behind), then returns them. Fails on an unexpected booking at once.
    pub async fn wait_confirmed_in_db(
        &self,
        event_id: Uuid,
        expected: &BTreeSet<Uuid>,
    ) -> Vec<StoredBooking> {
        let started = Instant::now();
        loop {
            let stored = self.confirmed_in_db(event_id).await;
            let ids: BTreeSet<Uuid> = stored.iter().map(|b| b.id).collect();
            let unexpected: Vec<_> = ids.difference(expected).collect();
            assert!(
                unexpected.is_empty(),
                "Postgres has confirmed bookings no client was told about: {unexpected:?}"
            );
            if ids == *expected {
                return stored;
            }
            self.assert_worker_alive();
            assert!(
                started.elapsed() < EVENTUAL,
                "after {EVENTUAL:?} Postgres has {} of {} confirmed bookings",
                ids.len(),
                expected.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl TestApp {
    /// The schema's own bookkeeping agrees with the bookings: `events.remaining` is tickets minus
    /// the confirmed quantity, and `holdings` is each user's confirmed quantity. Call it once the
    /// confirmed bookings are all in Postgres (`wait_confirmed_in_db`).
    pub async fn assert_store_consistent(&self, event_id: Uuid) {
        let (tickets, remaining): (i64, i64) =
            sqlx::query_as("SELECT tickets, remaining FROM events WHERE id = $1")
                .bind(event_id)
                .fetch_one(&self.pool)
                .await
                .expect("event row");
        let stored = self.confirmed_in_db(event_id).await;
        let sold: i64 = stored.iter().map(|b| i64::from(b.quantity)).sum();
        assert!(remaining >= 0, "Postgres: remaining {remaining}");
        assert_eq!(
            remaining,
            tickets - sold,
            "Postgres: events.remaining disagrees with the confirmed bookings"
        );
        let holdings: Vec<(String, i32)> = sqlx::query_as(
            "SELECT user_id, quantity FROM holdings WHERE event_id = $1 AND quantity > 0",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await
        .expect("holdings");
        let holdings: BTreeMap<&str, i64> = holdings
            .iter()
            .map(|(u, q)| (u.as_str(), i64::from(*q)))
            .collect();
        assert_eq!(
            holdings,
            per_user(&stored),
            "Postgres: holdings disagree with the confirmed bookings"
        );
    }
}

/// Tickets per user among `bookings`.
pub fn per_user(bookings: &[StoredBooking]) -> BTreeMap<&str, i64> {
    let mut held = BTreeMap::new();
    for b in bookings {
        *held.entry(b.user_id.as_str()).or_insert(0) += i64::from(b.quantity);
    }
    held
}
