//! Each API pod's view of the queue: every request in the topic that the worker group has not
//! decided yet (id → partition, offset, request), the group's committed offsets, and the set of
//! sold-out events. Filled by the pod's tail of the topics; this is where "pending" lives, so the
//! hot path never writes to Postgres. Pure bookkeeping: the tasks that feed it are in `tail.rs`.
//! Bounded by `Cap` (requests and estimated bytes): when full, the door sheds and the tail waits
//! for decisions to make room, so a backlog far larger than a pod's memory never enters it.

use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;

use ahash::{HashMap, HashSet};

use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::record::BookingRecord;
use crate::domain::Booking;

/// How much of the queue one pod's view may hold (`KAFKA_MAX_QUEUED`, `KAFKA_MAX_QUEUED_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub requests: usize,
    pub bytes: usize,
}

/// What one queued request costs beyond its strings: its `Queued` (~110 B), the hash-map and
/// offset-index entries and their slack, rounded up.
pub const QUEUED_OVERHEAD_BYTES: usize = 256;

/// The estimated memory `record` takes in the view (its key is held twice: in the record and in
/// `by_key`).
pub fn footprint(record: &BookingRecord) -> usize {
    let key = record.idempotency_key.as_ref().map_or(0, String::len);
    QUEUED_OVERHEAD_BYTES + record.user_id.len() + 2 * key
}

/// What the door of stage kafka finds in this pod's view for a new request (one lock).
#[derive(Debug)]
pub enum Door {
    /// Queue it.
    Open,
    /// Its idempotency key's first request is still queued: that request's answer.
    Replay(Booking),
    /// The event is sold out.
    SoldOut,
    /// The view is at its cap: shed.
    Full { requests: usize, bytes: usize },
}

/// A queued request and where it sits in its partition: the record (offset) that carries it, and
/// its place among that record's requests (index).
#[derive(Debug, Clone)]
pub struct Queued {
    pub record: BookingRecord,
    pub partition: i32,
    pub offset: i64,
    pub index: u32,
}

#[derive(Debug)]
struct State {
    queued: HashMap<Uuid, Queued>,
    /// Per partition, (offset, index) → id, to drop decided requests in offset order.
    by_offset: Vec<BTreeMap<(i64, u32), Uuid>>,
    /// Per partition, the group's committed offset: every record below it is decided (and so in
    /// Postgres, because workers commit offsets only after the database commit).
    decided_upto: Vec<i64>,
    /// Per partition, the offset the tail will read next.
    tailed: Vec<i64>,
    sold_out: HashSet<Uuid>,
    /// Per partition, the high watermark when the tail started.
    start_high: Vec<i64>,
    /// Idempotency key → id of the queued request that carries it (the first one seen), so a
    /// key reused with another request while the first is queued is refused at the door.
    by_key: HashMap<String, Uuid>,
    /// Sum of `footprint` over `queued`.
    bytes: usize,
}

impl State {
    fn full(&self, cap: Cap) -> bool {
        self.queued.len() >= cap.requests || self.bytes >= cap.bytes
    }

    /// `Backlog::insert` under the caller's lock; gives `record` back when it did not enter
    /// (decided already, or a partition this view does not have).
    fn insert(
        &mut self,
        partition: i32,
        (offset, index): (i64, u32),
        record: BookingRecord,
    ) -> Option<BookingRecord> {
        let p = partition as usize;
        if p >= self.tailed.len() || offset < self.decided_upto[p] {
            return Some(record);
        }
        self.by_offset[p].insert((offset, index), record.id);
        if let Some(key) = &record.idempotency_key {
            self.by_key.entry(key.clone()).or_insert(record.id);
        }
        match self.queued.entry(record.id) {
            // The earliest place wins: the first of two records with one id is the one decided
            // first (the second is its duplicate), so its decision is the booking's. Seen by the
            // tail after this pod's producer reported a later place, it moves the entry back.
            Entry::Occupied(mut queued) => {
                let q = queued.get_mut();
                if q.partition == partition && (offset, index) < (q.offset, q.index) {
                    (q.offset, q.index) = (offset, index);
                }
            }
            Entry::Vacant(slot) => {
                self.bytes += footprint(&record);
                slot.insert(Queued {
                    record,
                    partition,
                    offset,
                    index,
                });
            }
        }
        None
    }

    /// The booking if it is still queued, with its place in line: the undecided records ahead
    /// of it in its partition, plus the requests ahead of it in its own record. Requests a pod
    /// accepted together share a record, so under a sale this counts groups of requests ahead,
    /// not requests: cheap (no count over the view) and, like the line, it only ever shrinks.
    fn pending(&self, id: Uuid) -> Option<Booking> {
        let q = self.queued.get(&id)?;
        let ahead = q.offset - self.decided_upto[q.partition as usize];
        Some(
            q.record
                .pending_booking(Some(ahead.max(0) + i64::from(q.index))),
        )
    }
}

/// Shared between the stage (lookups, produced records), the tail and the refresher.
#[derive(Debug)]
pub struct Backlog {
    state: Mutex<State>,
    /// Bumped whenever the group's committed offsets move: watchers re-read their booking.
    decided: watch::Sender<u64>,
    /// Woken whenever the tail advances.
    tail_progress: Notify,
    /// Woken whenever decided requests leave the view.
    room: Notify,
    cap: Cap,
}

impl Backlog {
    pub fn new(partitions: i32, cap: Cap) -> Self {
        let n = partitions as usize;
        Self {
            state: Mutex::new(State {
                queued: HashMap::default(),
                by_offset: vec![BTreeMap::new(); n],
                decided_upto: vec![0; n],
                tailed: vec![0; n],
                sold_out: HashSet::default(),
                start_high: Vec::new(),
                by_key: HashMap::default(),
                bytes: 0,
            }),
            decided: watch::Sender::new(0),
            tail_progress: Notify::new(),
            room: Notify::new(),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("backlog lock poisoned")
    }

    pub fn partitions(&self) -> i32 {
        self.lock().tailed.len() as i32
    }

    /// Where the tail starts (the committed offsets, or the oldest record where none), and how
    /// far the topic reached then (`high`): until the tail got there, this view is incomplete.
    pub fn start(&self, decided_upto: &[i64], high: &[i64]) {
        let mut state = self.lock();
        for (p, &offset) in decided_upto.iter().enumerate().take(state.tailed.len()) {
            state.decided_upto[p] = offset;
            state.tailed[p] = offset;
        }
        state.start_high = high.to_vec();
    }

    /// The pod's readiness: the tail has read everything that was queued when it started, or
    /// the view is as full as it may be (a longer backlog is read as decisions make room; until
    /// then a status read of a request beyond it waits, then answers 503).
    pub fn ready(&self) -> bool {
        self.full() || self.complete()
    }

    /// Whether the view holds as much as its cap allows: the door sheds, the tail waits.
    pub fn full(&self) -> bool {
        self.lock().full(self.cap)
    }

    /// Waits until the view is not `full`; the caller bounds it with a timeout.
    pub async fn wait_room(&self) {
        loop {
            let notified = self.room.notified();
            if !self.full() {
                return;
            }
            notified.await;
        }
    }

    /// Requests and estimated bytes in the view.
    pub fn usage(&self) -> (usize, usize) {
        let state = self.lock();
        (state.queued.len(), state.bytes)
    }

    /// Whether the tail has read everything that was queued when it started.
    pub fn complete(&self) -> bool {
        let state = self.lock();
        state
            .start_high
            .iter()
            .zip(&state.tailed)
            .all(|(h, t)| t >= h)
    }

    /// Records a request seen alone in its record of the topic (as the tail does). Already
    /// decided or already known requests change nothing; a second record with the same id (an
    /// idempotent retry) keeps the first one's place.
    pub fn insert(&self, partition: i32, offset: i64, record: BookingRecord) {
        self.lock().insert(partition, (offset, 0), record);
    }

    /// The door's checks for a request of `event_id` with idempotency `key`, under one lock: the
    /// key's queued first request, then the sell-out, then the cap.
    pub fn door(&self, event_id: Uuid, key: Option<&str>) -> Door {
        let state = self.lock();
        if let Some(key) = key
            && let Some(first) = state.by_key.get(key).and_then(|id| state.pending(*id))
        {
            return Door::Replay(first);
        }
        if state.sold_out.contains(&event_id) {
            return Door::SoldOut;
        }
        if state.full(self.cap) {
            return Door::Full {
                requests: state.queued.len(),
                bytes: state.bytes,
            };
        }
        Door::Open
    }

    /// This pod's producer had the record carrying `requests` acknowledged at (`partition`,
    /// `offset`): they enter the view together (one lock), and the answers are the bookings as
    /// queued, with their places in line, in the same order. A request decided already (a fast
    /// worker, or the retry of a decided key) is still pending to its client, whose next read
    /// shows the decision.
    pub fn insert_acknowledged(
        &self,
        partition: i32,
        offset: i64,
        requests: Vec<BookingRecord>,
    ) -> Vec<Booking> {
        let mut state = self.lock();
        (0..)
            .zip(requests)
            .map(|(index, request)| {
                let id = request.id;
                match state.insert(partition, (offset, index), request) {
                    Some(decided) => decided.pending_booking(None),
                    None => state
                        .pending(id)
                        .expect("a request just inserted is queued"),
                }
            })
            .collect()
    }

    /// The tail read `records` (each at its partition and offset, in topic order, with its
    /// requests; none for a record this pod held already or could not decode): they enter the
    /// view, the tail's position moves past the last of each partition, and waiters are woken
    /// once.
    pub fn tailed_batch(&self, records: Vec<(i32, i64, Vec<BookingRecord>)>) {
        {
            let mut state = self.lock();
            for (partition, offset, requests) in records {
                for (index, request) in (0..).zip(requests) {
                    state.insert(partition, (offset, index), request);
                }
                if let Some(t) = state.tailed.get_mut(partition as usize) {
                    *t = (*t).max(offset + 1);
                }
            }
        }
        self.tail_progress.notify_waiters();
    }

    /// For each (partition, offset) the tail read, whether this pod holds that record already:
    /// it produced it (and entered it when the broker acknowledged it), or it is decided. A
    /// place in a partition is one record, so the offset alone tells; no id is needed.
    pub fn held(&self, places: &[(i32, i64)]) -> Vec<bool> {
        let state = self.lock();
        places
            .iter()
            .map(|&(partition, offset)| {
                let p = partition as usize;
                p < state.tailed.len()
                    && (offset < state.decided_upto[p]
                        || state.by_offset[p]
                            .range((offset, 0)..=(offset, u32::MAX))
                            .next()
                            .is_some())
            })
            .collect()
    }

    /// The tail read up to `offset` (inclusive) of `partition`.
    pub fn tailed(&self, partition: i32, offset: i64) {
        {
            let mut state = self.lock();
            if let Some(t) = state.tailed.get_mut(partition as usize) {
                *t = (*t).max(offset + 1);
            }
        }
        self.tail_progress.notify_waiters();
    }

    /// Whether the tail has read every record below `high` in each partition.
    pub fn caught_up(&self, high: &[i64]) -> bool {
        let state = self.lock();
        high.iter().zip(&state.tailed).all(|(h, t)| t >= h)
    }

    /// Waits until `caught_up(high)`; the caller bounds it with a timeout.
    pub async fn wait_caught_up(&self, high: &[i64]) {
        loop {
            let notified = self.tail_progress.notified();
            if self.caught_up(high) {
                return;
            }
            notified.await;
        }
    }

    /// The group decided everything below `offsets[p]`: forget those requests and wake watchers.
    pub fn decided_upto(&self, offsets: &[Option<i64>]) {
        let mut moved = false;
        {
            let mut state = self.lock();
            let State {
                queued,
                by_offset,
                decided_upto,
                by_key,
                bytes,
                ..
            } = &mut *state;
            for (p, committed) in offsets.iter().enumerate().take(decided_upto.len()) {
                let Some(committed) = *committed else {
                    continue;
                };
                if committed <= decided_upto[p] {
                    continue;
                }
                decided_upto[p] = committed;
                moved = true;
                let still_queued = by_offset[p].split_off(&(committed, 0));
                for ((offset, index), id) in std::mem::replace(&mut by_offset[p], still_queued) {
                    if !queued.get(&id).is_some_and(|q| {
                        q.partition == p as i32 && (q.offset, q.index) == (offset, index)
                    }) {
                        continue;
                    }
                    let Some(decided) = queued.remove(&id) else {
                        continue;
                    };
                    *bytes = bytes.saturating_sub(footprint(&decided.record));
                    if let Some(key) = decided.record.idempotency_key
                        && by_key.get(&key) == Some(&id)
                    {
                        by_key.remove(&key);
                    }
                }
            }
        }
        if moved {
            self.decided.send_modify(|generation| *generation += 1);
            self.room.notify_waiters();
        }
    }

    /// The booking if it is still queued, with its place in line: the undecided requests ahead
    /// of it in its partition.
    pub fn pending(&self, id: Uuid) -> Option<Booking> {
        self.lock().pending(id)
    }

    pub fn queued_record(&self, id: Uuid) -> Option<BookingRecord> {
        self.lock().queued.get(&id).map(|q| q.record.clone())
    }

    /// The queued booking that first carried idempotency `key`, with its place in line.
    pub fn pending_with_key(&self, key: &str) -> Option<Booking> {
        let state = self.lock();
        state.pending(*state.by_key.get(key)?)
    }

    /// Requests this pod knows to be queued and undecided.
    pub fn len(&self) -> usize {
        self.lock().queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_sold_out(&self, event_id: Uuid, sold_out: bool) {
        let mut state = self.lock();
        if sold_out {
            state.sold_out.insert(event_id);
        } else {
            state.sold_out.remove(&event_id);
        }
    }

    pub fn is_sold_out(&self, event_id: Uuid) -> bool {
        self.lock().sold_out.contains(&event_id)
    }

    /// A receiver that changes whenever decisions happened.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.decided.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::BookingStatus;
    use crate::stage::kafka::record::{RECORD_VERSION, booking_id};

    const UNCAPPED: Cap = Cap {
        requests: usize::MAX,
        bytes: usize::MAX,
    };

    fn record(key: Option<&str>) -> BookingRecord {
        BookingRecord {
            v: RECORD_VERSION,
            id: booking_id(key, Uuid::nil(), "u", 1),
            event_id: Uuid::nil(),
            user_id: "u".into(),
            quantity: 1,
            idempotency_key: key.map(Into::into),
            accepted_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn position_counts_undecided_requests_ahead() {
        let backlog = Backlog::new(2, UNCAPPED);
        backlog.start(&[10, 0], &[10, 0]);
        let (a, b) = (record(None), record(None));
        backlog.insert(0, 12, a.clone());
        backlog.insert(0, 15, b.clone());
        assert_eq!(backlog.pending(a.id).unwrap().position, Some(2));
        assert_eq!(backlog.pending(b.id).unwrap().position, Some(5));
        assert_eq!(
            backlog.pending(b.id).unwrap().status,
            BookingStatus::Pending
        );

        let mut rx = backlog.subscribe();
        backlog.decided_upto(&[Some(13), None]);
        assert!(rx.has_changed().unwrap());
        assert!(
            backlog.pending(a.id).is_none(),
            "decided requests leave the backlog"
        );
        assert_eq!(backlog.pending(b.id).unwrap().position, Some(2));
        rx.mark_unchanged();
        backlog.decided_upto(&[Some(13), None]);
        assert!(!rx.has_changed().unwrap(), "no movement, no wake-up");
    }

    #[test]
    fn decided_and_duplicate_records_are_not_queued_again() {
        let backlog = Backlog::new(1, UNCAPPED);
        backlog.start(&[5], &[5]);
        let old = record(None);
        backlog.insert(0, 4, old.clone());
        assert!(
            backlog.pending(old.id).is_none(),
            "below the committed offset: already decided"
        );

        let retried = record(Some("k"));
        backlog.insert(0, 9, retried.clone());
        backlog.insert(0, 6, retried.clone());
        assert_eq!(
            backlog.pending(retried.id).unwrap().position,
            Some(1),
            "the earliest place wins"
        );
        backlog.insert(0, 8, retried.clone());
        assert_eq!(
            backlog.pending(retried.id).unwrap().position,
            Some(1),
            "a later copy changes nothing"
        );
        assert_eq!(backlog.pending_with_key("k").unwrap().id, retried.id);
        backlog.decided_upto(&[Some(7)]);
        assert!(backlog.pending(retried.id).is_none());
        assert!(
            backlog.pending_with_key("k").is_none(),
            "a decided request frees its key"
        );
        backlog.decided_upto(&[Some(10)]);
        assert!(backlog.is_empty());
    }

    #[tokio::test]
    async fn waits_for_the_tail() {
        let backlog = std::sync::Arc::new(Backlog::new(2, UNCAPPED));
        backlog.start(&[0, 3], &[2, 3]);
        assert!(
            !backlog.complete(),
            "two records queued before the start are not read yet"
        );
        assert!(backlog.caught_up(&[0, 3]));
        assert!(!backlog.caught_up(&[1, 3]));
        let waiter = tokio::spawn({
            let backlog = backlog.clone();
            async move { backlog.wait_caught_up(&[2, 3]).await }
        });
        backlog.tailed(0, 0);
        backlog.tailed(0, 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(backlog.complete());
    }

    #[test]
    fn capped_by_requests_and_by_bytes_and_ready_when_full() {
        let by_count = Backlog::new(
            1,
            Cap {
                requests: 2,
                bytes: usize::MAX,
            },
        );
        by_count.start(&[0], &[100]);
        assert!(!by_count.ready(), "100 queued, none read");
        by_count.insert(0, 0, record(None));
        assert!(!by_count.full());
        by_count.insert(0, 1, record(None));
        assert!(
            by_count.full() && by_count.ready(),
            "full: ready without reading the rest"
        );
        by_count.decided_upto(&[Some(1)]);
        assert!(!by_count.full(), "a decision makes room");
        assert_eq!(by_count.usage().0, 1);

        let one = record(Some("a-long-idempotency-key"));
        let by_bytes = Backlog::new(
            1,
            Cap {
                requests: usize::MAX,
                bytes: 2 * footprint(&one),
            },
        );
        by_bytes.start(&[0], &[0]);
        by_bytes.insert(0, 0, one.clone());
        assert_eq!(by_bytes.usage(), (1, footprint(&one)));
        assert!(!by_bytes.full());
        by_bytes.insert(0, 1, record(Some("another-long-idempotency-key")));
        assert!(by_bytes.full());
        by_bytes.decided_upto(&[Some(2)]);
        assert_eq!(
            by_bytes.usage(),
            (0, 0),
            "decided requests give their bytes back"
        );
    }

    #[test]
    fn sold_out_set() {
        let backlog = Backlog::new(1, UNCAPPED);
        let event = Uuid::new_v4();
        assert!(!backlog.is_sold_out(event));
        backlog.set_sold_out(event, true);
        assert!(backlog.is_sold_out(event));
        backlog.set_sold_out(event, false);
        assert!(!backlog.is_sold_out(event));
    }

    #[test]
    fn the_door_checks_the_key_then_the_sell_out_then_the_cap() {
        let event = Uuid::nil();
        let backlog = Backlog::new(
            1,
            Cap {
                requests: 2,
                bytes: usize::MAX,
            },
        );
        backlog.start(&[0], &[0]);
        assert!(matches!(backlog.door(event, Some("k")), Door::Open));
        let first = backlog
            .insert_acknowledged(0, 0, vec![record(Some("k"))])
            .remove(0);
        assert_eq!(first.position, Some(0));
        match backlog.door(event, Some("k")) {
            Door::Replay(replayed) => assert_eq!(replayed.id, first.id),
            other => panic!("a queued key replays its first answer, not {other:?}"),
        }
        backlog.set_sold_out(event, true);
        assert!(
            matches!(backlog.door(event, Some("k")), Door::Replay(_)),
            "the key first"
        );
        assert!(matches!(backlog.door(event, Some("other")), Door::SoldOut));
        backlog.set_sold_out(event, false);
        backlog.insert(0, 1, record(Some("k2")));
        assert!(matches!(
            backlog.door(event, None),
            Door::Full { requests: 2, .. }
        ));
    }

    #[test]
    fn an_acknowledged_request_decided_already_is_still_pending_to_its_client() {
        let backlog = Backlog::new(1, UNCAPPED);
        backlog.start(&[5], &[5]);
        let late = backlog
            .insert_acknowledged(0, 3, vec![record(Some("k"))])
            .remove(0);
        assert_eq!(late.status, BookingStatus::Pending);
        assert_eq!(late.position, None, "decided: no place in line");
        assert!(backlog.is_empty());
    }

    #[test]
    fn the_tail_skips_what_this_pod_holds_by_its_place_alone() {
        let backlog = Backlog::new(2, UNCAPPED);
        backlog.start(&[0, 4], &[0, 4]);
        backlog.insert_acknowledged(0, 0, vec![record(Some("mine"))]);
        assert_eq!(
            backlog.held(&[(0, 0), (0, 1), (1, 3), (1, 4), (7, 0)]),
            [true, false, true, false, false],
            "produced here, another pod's, decided, another pod's, no such partition"
        );
        backlog.tailed_batch(vec![(0, 0, vec![]), (0, 1, vec![record(Some("theirs"))])]);
        assert_eq!(backlog.len(), 2);
        assert!(backlog.caught_up(&[2, 4]));
        assert_eq!(
            backlog.pending_with_key("theirs").unwrap().position,
            Some(1)
        );
    }

    #[test]
    fn requests_sharing_a_record_queue_in_its_order_and_leave_with_it() {
        let backlog = Backlog::new(1, UNCAPPED);
        backlog.start(&[0], &[0]);
        backlog.tailed_batch(vec![(0, 0, vec![record(Some("a0"))])]);
        let together = vec![record(Some("b0")), record(Some("b1")), record(Some("b2"))];
        backlog.tailed_batch(vec![(0, 1, together)]);
        let mine = backlog.insert_acknowledged(0, 2, vec![record(Some("c0")), record(Some("c1"))]);
        let position = |key| backlog.pending_with_key(key).unwrap().position;
        assert_eq!(
            [position("a0"), position("b0"), position("b2")],
            [Some(0), Some(1), Some(3)],
            "records ahead, then requests ahead in its own record"
        );
        let answered: Vec<_> = mine.iter().map(|b| b.position).collect();
        assert_eq!(
            answered,
            [Some(2), Some(3)],
            "answers in the record's order"
        );
        assert_eq!(backlog.held(&[(0, 1), (0, 2), (0, 3)]), [true, true, false]);
        backlog.decided_upto(&[Some(2)]);
        assert!(
            backlog.pending_with_key("b2").is_none(),
            "its record was decided"
        );
        assert_eq!(backlog.len(), 2);
        assert_eq!([position("c0"), position("c1")], [Some(0), Some(1)]);
    }
}
