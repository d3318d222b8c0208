//! The API's way into the requests topic: requests of one event that this pod accepted at the
//! same moment travel as one record (`record::BookingRecord::join`), produced once and
//! acknowledged once. librdkafka, the broker and every pod's tail then pay per record, not per
//! request: at a sale's concurrency that was the largest cost of a 202.
//!
//! No timer gathers them: one task takes whatever requests are waiting when it runs, lets every
//! other task that is ready run once, and takes what they added (up to `MAX_RECORD_REQUESTS`), so
//! a lone request goes out at once and a crowd shares records by itself. Each request still gets its own answer: its place (partition, offset, index) once the
//! broker acknowledged the record, or the broker's refusal (503, never a false 202).

use std::collections::hash_map::Entry;

use ahash::HashMap;
use prometheus_client::metrics::histogram::Histogram;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::client::unavailable;
use super::record::BookingRecord;
use crate::stage::StageError;

/// Most requests one record carries: 256 of the largest requests (a 128-byte user id, a
/// 200-byte key) stay far below the broker's default 1 MB record limit.
pub const MAX_RECORD_REQUESTS: usize = 256;

/// Most requests waiting for the producer task. The route gate admits fewer at once, so a full
/// queue means the task is stuck, and the request is refused rather than held.
const MAX_WAITING: usize = 16 * 1024;

/// Where an acknowledged request sits: its record's partition and offset, and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub partition: i32,
    pub offset: i64,
    pub index: u32,
}

type Reply = oneshot::Sender<Result<Place, StageError>>;

struct Job {
    event_id: Uuid,
    encoded: Vec<u8>,
    reply: Reply,
}

/// A handle on the producer task; the task ends when the handle is dropped.
pub struct RequestProducer {
    jobs: mpsc::Sender<Job>,
}

impl RequestProducer {
    /// Starts the task producing to `topic`; `record_requests` observes how many requests each
    /// record carries.
    pub fn start(producer: FutureProducer, topic: String, record_requests: Histogram) -> Self {
        let (jobs, queue) = mpsc::channel(MAX_WAITING);
        tokio::spawn(run(producer, topic, queue, record_requests));
        Self { jobs }
    }

    /// Produces `record` (with others of its event waiting at the same time) and waits for the
    /// broker's acknowledgement. librdkafka reports every record within the producer's
    /// `message.timeout.ms`, and the route gate bounds the request by REQUEST_TIMEOUT_MS besides.
    pub async fn produce(&self, record: &BookingRecord) -> Result<Place, StageError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            event_id: record.event_id,
            encoded: record.encode(),
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
    encoded: Vec<Vec<u8>>,
    replies: Vec<Reply>,
}

async fn run(
    producer: FutureProducer,
    topic: String,
    mut queue: mpsc::Receiver<Job>,
    record_requests: Histogram,
) {
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
            let gathered = match by_event.entry(job.event_id) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => entry.insert(Gathered::default()),
            };
            gathered.encoded.push(job.encoded);
            gathered.replies.push(job.reply);
        }
        for (event_id, gathered) in by_event.drain() {
            record_requests.observe(gathered.replies.len() as f64);
            send(&producer, &topic, event_id, gathered);
        }
    }
}

/// Hands one record to librdkafka and answers its requests once the broker did.
fn send(producer: &FutureProducer, topic: &str, event_id: Uuid, gathered: Gathered) {
    let Gathered { encoded, replies } = gathered;
    let payload = BookingRecord::join(&encoded);
    let key = event_id.to_string();
    let delivery = match producer.send_result(FutureRecord::to(topic).key(&key).payload(&payload)) {
        Ok(delivery) => delivery,
        Err((err, _)) => {
            let detail = format!("cannot queue the request: {err}");
            for reply in replies {
                let _ = reply.send(Err(unavailable(detail.clone())));
            }
            return;
        }
    };
    tokio::spawn(async move {
        let place = match delivery.await {
            Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
            Ok(Err((err, _))) => Err(format!("broker did not acknowledge: {err}")),
            Err(_) => Err("producer dropped the request".to_owned()),
        };
        for (index, reply) in (0..).zip(replies) {
            // A client that went away dropped its receiver: nothing to tell it.
            let _ = reply.send(match &place {
                Ok((partition, offset)) => Ok(Place {
                    partition: *partition,
                    offset: *offset,
                    index,
                }),
                Err(detail) => Err(unavailable(detail.clone())),
            });
        }
    });
}
