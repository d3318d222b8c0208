//! The API's way into the requests topic: requests of one event that this pod accepted at the
//! same moment travel as one record (`record::BookingRecord::join`), produced once and
//! acknowledged once. librdkafka, the broker and every pod's tail then pay per record, not per
//! request, so the producer need not wait to batch (`KAFKA_LINGER_MS` 0): at 256 connections a
//! 5 ms linger was most of a 202's latency, and without it one record per request doubled the
//! broker's CPU.
//!
//! No timer gathers them: one task takes whatever requests are waiting when it runs, lets every
//! other task that is ready run once, and takes what they added (up to `MAX_RECORD_REQUESTS`), so
//! a lone request goes out at once and a crowd shares records by itself. Each request still gets
//! its own answer: once the broker acknowledged the record, its requests enter this pod's view of
//! the queue together (one lock, before any answer, so the tail, which skips the records this pod
//! holds, never passes one of them by) and each is answered with its pending booking; or the
//! broker's refusal (503, never a false 202).

use std::collections::hash_map::Entry;
use std::sync::Arc;

use ahash::HashMap;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::backlog::Backlog;
use super::client::unavailable;
use super::record::BookingRecord;
use crate::domain::Booking;
use crate::stage::StageError;

/// Most requests one record carries: 256 of the largest requests (a 128-byte user id, a
/// 200-byte key) stay far below the broker's default 1 MB record limit.
pub const MAX_RECORD_REQUESTS: usize = 256;

/// Most requests waiting for the producer task. The route gate admits fewer at once, so a full
/// queue means the task is stuck, and the request is refused rather than held.
const MAX_WAITING: usize = 16 * 1024;

type Reply = oneshot::Sender<Result<Booking, StageError>>;

struct Job {
    record: BookingRecord,
    encoded: Vec<u8>,
    reply: Reply,
}

/// A handle on the producer task; the task ends when the handle is dropped.
pub struct RequestProducer {
    jobs: mpsc::Sender<Job>,
}

impl RequestProducer {
    /// Starts the task producing to `topic`, entering what the broker acknowledged in
    /// `backlog`; `record_requests` observes how many requests each record carries.
    pub fn start(
        producer: FutureProducer,
        topic: String,
        backlog: Arc<Backlog>,
        record_requests: Histogram,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(MAX_WAITING);
        let sender = Sender {
            producer,
            topic,
            backlog,
        };
        tokio::spawn(run(sender, queue, record_requests));
        Self { jobs }
    }

    /// Produces `record` (with others of its event waiting at the same time), waits for the
    /// broker's acknowledgement and answers the booking as queued. librdkafka reports every
    /// record within the producer's `message.timeout.ms`, and the route gate bounds the request
    /// by REQUEST_TIMEOUT_MS besides.
    pub async fn produce(&self, record: BookingRecord) -> Result<Booking, StageError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            encoded: record.encode(),
            record,
            reply,
        };
        self.jobs.try_send(job).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => StageError::Overloaded(format!(
                "{MAX_WAITING} requests are waiting for the Kafka producer"
            )),
            mpsc::error::TrySendError::Closed(_) => unavailable("the producer has stopped"),
        })?;
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("producer dropped the request")))
    }
}

/// The requests of one event gathered for one record, in the order they arrived.
#[derive(Default)]
struct Gathered {
    records: Vec<BookingRecord>,
    encoded: Vec<Vec<u8>>,
    replies: Vec<Reply>,
}

async fn run(sender: Sender, mut queue: mpsc::Receiver<Job>, record_requests: Histogram) {
    let mut jobs = Vec::with_capacity(MAX_RECORD_REQUESTS);
    // Almost always one event (a sale); the map keeps each event's requests in their order.
    let mut by_event: HashMap<Uuid, Gathered> = HashMap::default();
    while queue.recv_many(&mut jobs, MAX_RECORD_REQUESTS).await > 0 {
        // Once to the back of the run queue: the requests already being handled reach it too
        // (without this, the task wakes for each request and a record carries one).
        tokio::task::yield_now().await;
        while jobs.len() < MAX_RECORD_REQUESTS
            && let Ok(job) = queue.try_recv()
        {
            jobs.push(job);
        }
        for job in jobs.drain(..) {
            let gathered = match by_event.entry(job.record.event_id) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(Gathered::default()),
            };
            gathered.records.push(job.record);
            gathered.encoded.push(job.encoded);
            gathered.replies.push(job.reply);
        }
        for (_, gathered) in by_event.drain() {
            record_requests.observe(gathered.replies.len() as f64);
            sender.send(gathered);
        }
    }
}

/// What the task needs to produce a record and enter it once acknowledged.
struct Sender {
    producer: FutureProducer,
    topic: String,
    backlog: Arc<Backlog>,
}

impl Sender {
    /// Hands one record to librdkafka and answers its requests once the broker did.
    fn send(&self, gathered: Gathered) {
        let Gathered {
            records,
            encoded,
            replies,
        } = gathered;
        let payload = BookingRecord::join(&encoded);
        // All of one event: the first one's key is the record's.
        let key = records[0].key();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((err, _)) => {
                return refuse(replies, &format!("cannot queue the request: {err}"));
            }
        };
        let backlog = self.backlog.clone();
        tokio::spawn(async move {
            let (partition, offset) = match delivery.await {
                Ok(Ok(delivery)) => (delivery.partition, delivery.offset),
                Ok(Err((err, _))) => {
                    return refuse(replies, &format!("broker did not acknowledge: {err}"));
                }
                Err(_) => return refuse(replies, "producer dropped the request"),
            };
            let bookings = backlog.insert_acknowledged(partition, offset, records);
            for (reply, booking) in replies.into_iter().zip(bookings) {
                // A client that went away dropped its receiver: nothing to tell it.
                let _ = reply.send(Ok(booking));
            }
        });
    }
}

/// Answers every request of a record the broker did not take: 503, nothing queued.
fn refuse(replies: Vec<Reply>, detail: &str) {
    for reply in replies {
        let _ = reply.send(Err(unavailable(detail)));
    }
}
