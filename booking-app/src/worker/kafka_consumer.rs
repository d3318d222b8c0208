//! Stage kafka's worker: a member of the consumer group that decides queued booking requests in
//! batches, one Postgres transaction per batch, and commits the batch's offsets only after that
//! transaction committed. A crash in between redelivers the batch, which then changes nothing.

pub mod dead_letter;
pub mod decide;
pub mod ledger;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, DefaultConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::stage::StageError;
use crate::stage::kafka::client::{KafkaSettings, committed_offsets, watermarks};
use crate::stage::kafka::metrics::WorkerMetrics;
use crate::stage::kafka::record::BookingRecord;
use dead_letter::DeadLetter;

/// Most Postgres connections a worker opens.
pub const WORKER_DB_CONNECTIONS: u32 = 2;

/// Payload of a sold-out mark (a tombstone would lift it).
pub const SOLD_OUT_PAYLOAD: &[u8] = b"sold_out";

/// The records of one batch and the offsets to commit once they are decided.
#[derive(Debug, Default)]
pub struct Batch {
    pub requests: Vec<BookingRecord>,
    /// (partition, offset) of each of `requests`, in the same order.
    pub sources: Vec<(i32, i64)>,
    /// Highest offset read per partition.
    pub last_offsets: BTreeMap<i32, i64>,
    /// Records that are not booking requests.
    pub undecodable: Vec<DeadLetter>,
}

impl Batch {
    /// Adds one record read from the topic: its booking requests, or a dead letter when it is
    /// not one (nothing can decide it: it is dead-lettered, counted, and committed past).
    fn take(&mut self, message: &impl Message) {
        self.last_offsets
            .insert(message.partition(), message.offset());
        match BookingRecord::decode(message.payload()) {
            Ok(records) => {
                let source = (message.partition(), message.offset());
                self.sources
                    .extend(std::iter::repeat_n(source, records.len()));
                self.requests.extend(records);
            }
            Err(err) => {
                tracing::error!(partition = message.partition(), offset = message.offset(), error = %err,
                    "kafka worker: setting aside a record that is not a booking request");
                self.undecodable.push(DeadLetter {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    payload: message.payload().map(<[u8]>::to_vec),
                    reason: dead_letter::undecodable(&err),
                });
            }
        }
    }

    /// Every record of the batch that is not decided, with its reason: the undecodable ones and
    /// those `verdicts` (one per request) set aside.
    pub fn dead_letters(&self, verdicts: &[decide::Verdict]) -> Vec<DeadLetter> {
        let mut letters = self.undecodable.clone();
        for ((request, (partition, offset)), verdict) in
            self.requests.iter().zip(&self.sources).zip(verdicts)
        {
            if let Some(reason) = dead_letter::undecided(*verdict) {
                letters.push(DeadLetter {
                    partition: *partition,
                    offset: *offset,
                    key: Some(request.key().into_bytes()),
                    payload: Some(request.encode()),
                    reason,
                });
            }
        }
        letters
    }
}

/// A worker: its group consumer, a producer for sold-out marks, and the database.
pub struct KafkaWorker {
    settings: KafkaSettings,
    pool: PgPool,
    consumer: StreamConsumer<DefaultConsumerContext>,
    producer: FutureProducer,
    metrics: WorkerMetrics,
    sold_out_published: HashSet<Uuid>,
    /// Per partition, the offset after the last decided record whose commit has not succeeded.
    uncommitted: BTreeMap<i32, i64>,
    /// Test hook: abort the process after this many batches were committed to the database but
    /// before their offsets are committed (the crash window the redelivery handles).
    abort_after_batches: Option<u64>,
    batches: u64,
}

/// `run` with the settings and database of `config`.
pub async fn run_from_config(
    config: &Config,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<(), StageError> {
    let settings = KafkaSettings::from_config(&config.kafka)?;
    // One transaction at a time: two connections are plenty (and the operator counts them).
    let mut postgres = config.postgres.clone();
    postgres.db_pool_size = postgres.db_pool_size.min(WORKER_DB_CONNECTIONS);
    let pool = crate::db::connect(&postgres)
        .await
        .map_err(crate::stage::records::pg_error)?;
    if config.drain {
        return drain(settings, pool, metrics, stop).await;
    }
    run(settings, pool, metrics, stop).await
}

/// While idle, how often a failed offset commit is tried again.
const COMMIT_RETRY: Duration = Duration::from_millis(500);

/// How often `--drain` compares the group's committed offsets with the partitions' ends.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// `booking-app worker --drain` (the operator's drain Job before a stage change): decides with
/// the group until its committed offsets reach the end of every partition, i.e. every request
/// that was ever answered 202 is decided in Postgres, then returns. The Job's API pods are gone by
/// then, so the end of the topic no longer moves.
async fn drain(
    settings: KafkaSettings,
    pool: PgPool,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<(), StageError> {
    let partitions = settings.ensure_topics().await?;
    let reader = std::sync::Arc::new(settings.offsets_reader()?);
    let worker = KafkaWorker::new(settings.clone(), pool, WorkerMetrics::register(metrics))?;
    let finished = stop.child_token();
    let deciding = tokio::spawn(worker.run(finished.clone()));
    let result = loop {
        tokio::select! {
            () = stop.cancelled() => break Err(StageError::Internal("drain interrupted before the queue was empty".into())),
            () = tokio::time::sleep(DRAIN_CHECK_INTERVAL) => {}
        }
        let committed = committed_offsets(&reader, &settings.topic, partitions).await;
        let marks = watermarks(&reader, &settings.topic, partitions).await;
        let (Ok(committed), Ok(marks)) = (committed, marks) else {
            continue;
        };
        let left = undecided(&committed, &marks);
        if left == 0 {
            tracing::info!(topic = %settings.topic, "kafka queue drained: every request is decided");
            break Ok(());
        }
        tracing::info!(left, "draining the kafka queue");
    };
    finished.cancel();
    let _ = deciding.await;
    result
}

/// Requests not decided yet: per partition, the end of the log minus the group's committed
/// offset (a partition the group never committed counts from its oldest retained record).
fn undecided(committed: &[Option<i64>], marks: &[(i64, i64)]) -> i64 {
    committed
        .iter()
        .zip(marks)
        .map(|(c, (low, high))| (high - c.unwrap_or(*low).max(*low)).max(0))
        .sum()
}

/// Runs a worker until `stop` is cancelled, its series registered in `metrics`.
pub async fn run(
    settings: KafkaSettings,
    pool: PgPool,
    metrics: &Metrics,
    stop: CancellationToken,
) -> Result<(), StageError> {
    settings.ensure_topics().await?;
    let worker = KafkaWorker::new(settings, pool, WorkerMetrics::register(metrics))?;
    worker.run(stop).await;
    Ok(())
}

impl KafkaWorker {
    pub fn new(
        settings: KafkaSettings,
        pool: PgPool,
        metrics: WorkerMetrics,
    ) -> Result<Self, StageError> {
        let consumer = settings.group_consumer(DefaultConsumerContext)?;
        consumer.subscribe(&[&settings.topic])?;
        let producer = settings.producer()?;
        let abort_after_batches = std::env::var("KAFKA_WORKER_ABORT_AFTER_BATCHES")
            .ok()
            .and_then(|v| v.parse().ok());
        Ok(Self {
            settings,
            pool,
            consumer,
            producer,
            metrics,
            sold_out_published: HashSet::new(),
            uncommitted: BTreeMap::new(),
            abort_after_batches,
            batches: 0,
        })
    }

    /// Decides batches until `stop`; a batch in flight when it comes is left uncommitted (it is
    /// redelivered to whichever member takes the partition).
    pub async fn run(mut self, stop: CancellationToken) {
        tracing::info!(topic = %self.settings.topic, group = %self.settings.group, "kafka worker started");
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => break,
                batch = self.next_batch() => batch,
            };
            let started = Instant::now();
            let Some(outcome) = self.decide_until_committed(&batch, &stop).await else {
                break;
            };
            let letters = batch.dead_letters(&outcome.decided.verdicts);
            if !self.dead_letter_until_sent(&letters, &stop).await {
                break;
            }
            self.batches += 1;
            if self.abort_after_batches.is_some_and(|n| self.batches >= n) {
                tracing::error!(
                    batches = self.batches,
                    "KAFKA_WORKER_ABORT_AFTER_BATCHES: aborting before the offset commit"
                );
                std::process::abort();
            }
            self.commit(&batch);
            self.metrics.batch_took(started.elapsed().as_secs_f64());
            self.count(&batch, &outcome.decided.verdicts);
            self.publish_sold_out(&outcome.remaining_after).await;
        }
        tracing::info!("kafka worker stopped");
    }

    /// Waits for a first record, then takes what arrives within `batch_linger`, until the batch
    /// holds `batch_size` requests (records are taken whole: the last one may carry it past that
    /// by less than one record's requests, `MAX_RECORD_REQUESTS`).
    async fn next_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        let mut deadline = None;
        while batch.requests.len() + batch.undecodable.len() < self.settings.batch_size {
            let message = match deadline {
                None if !self.uncommitted.is_empty() => {
                    match tokio::time::timeout(COMMIT_RETRY, self.consumer.recv()).await {
                        Ok(message) => message,
                        Err(_) => {
                            self.commit_uncommitted();
                            continue;
                        }
                    }
                }
                None => self.consumer.recv().await,
                Some(at) => match tokio::time::timeout_at(at, self.consumer.recv()).await {
                    Ok(message) => message,
                    Err(_) => break,
                },
            };
            let message = match message {
                Ok(message) => message,
                Err(err) => {
                    tracing::warn!(error = %err, "kafka worker: cannot read; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if batch.last_offsets.is_empty() {
                        continue;
                    } else {
                        break;
                    }
                }
            };
            batch.take(&message);
            // What librdkafka has fetched already joins without waiting: one stream for the run
            // of ready records, where a `recv` per record costs a waker registration and a timer.
            let mut ready = self.consumer.stream();
            while batch.requests.len() + batch.undecodable.len() < self.settings.batch_size {
                match ready.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.take(&message),
                    Some(Some(Err(err))) => {
                        tracing::warn!(error = %err, "kafka worker: cannot read; retrying");
                        break;
                    }
                    // Nothing ready: the loop above waits, within the batch's linger.
                    _ => break,
                }
            }
            deadline
                .get_or_insert_with(|| tokio::time::Instant::now() + self.settings.batch_linger);
        }
        batch
    }

    /// The batch's transaction, retried with backoff until it commits (`None`: stopped first).
    async fn decide_until_committed(
        &self,
        batch: &Batch,
        stop: &CancellationToken,
    ) -> Option<ledger::Outcome> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match ledger::decide_batch(&self.pool, &batch.requests).await {
                Ok(outcome) => return Some(outcome),
                Err(err) => tracing::warn!(error = %err, records = batch.requests.len(),
                    retry_in_ms = backoff.as_millis() as u64, "kafka worker: batch transaction failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Sends the batch's dead letters, retried with backoff until the broker took them all
    /// (`false`: stopped first; the batch is then redelivered, and its letters sent again).
    async fn dead_letter_until_sent(
        &self,
        letters: &[DeadLetter],
        stop: &CancellationToken,
    ) -> bool {
        if letters.is_empty() {
            return true;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = dead_letter::publish(
                &self.producer,
                &self.settings.dead_letter_topic,
                &self.settings.topic,
                letters,
                self.settings.produce_timeout,
            )
            .await;
            match sent {
                Ok(()) => {
                    for letter in letters {
                        tracing::warn!(partition = letter.partition, offset = letter.offset,
                            reason = letter.reason, topic = %self.settings.dead_letter_topic,
                            "kafka worker: record not decided; dead-lettered");
                        self.metrics.dead_lettered(letter.reason);
                    }
                    return true;
                }
                Err(err) => tracing::warn!(error = %err, letters = letters.len(),
                    retry_in_ms = backoff.as_millis() as u64, "kafka worker: cannot dead-letter"),
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Commits the offsets after the batch, synchronously (one round trip per batch): the API
    /// pods read "decided" from these offsets, so a commit that failed silently (asynchronous
    /// commits report only to a callback) left decided bookings reading `pending` until the next
    /// batch, and after the last batch of a sale, forever. A failed commit is kept and retried
    /// with the next batch or, while idle, every `COMMIT_RETRY`; a commit that is lost anyway (a
    /// crash, a partition moved) only redelivers records that are decided already.
    fn commit(&mut self, batch: &Batch) {
        for (partition, offset) in &batch.last_offsets {
            let next = self.uncommitted.entry(*partition).or_insert(offset + 1);
            *next = (*next).max(offset + 1);
        }
        self.commit_uncommitted();
    }

    fn commit_uncommitted(&mut self) {
        if self.uncommitted.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::with_capacity(self.uncommitted.len());
        for (partition, next) in &self.uncommitted {
            if let Err(err) = offsets.add_partition_offset(
                &self.settings.topic,
                *partition,
                Offset::Offset(*next),
            ) {
                tracing::error!(error = %err, "kafka worker: cannot build the offset list");
                return;
            }
        }
        match self.consumer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => self.uncommitted.clear(),
            Err(err) => {
                self.metrics.commit_failed();
                tracing::warn!(error = %err, partitions = self.uncommitted.len(),
                    "kafka worker: offset commit failed; retrying (the API pods read these offsets)");
            }
        }
    }

    fn count(&self, batch: &Batch, verdicts: &[decide::Verdict]) {
        let mut by_outcome: BTreeMap<&str, u64> = BTreeMap::new();
        for verdict in verdicts {
            *by_outcome.entry(verdict.outcome()).or_default() += 1;
        }
        for (outcome, n) in &by_outcome {
            self.metrics.decided(outcome, *n);
        }
        let undecodable = batch.undecodable.len() as u64;
        self.metrics.decided("malformed", undecodable);
        tracing::debug!(
            ?by_outcome,
            malformed = undecodable,
            "kafka worker: batch committed"
        );
    }

    /// Tells every API pod that these events are sold out, so they answer 409 at the door. After
    /// a restart the mark is simply published again; a failure is retried with the next batch.
    async fn publish_sold_out(&mut self, remaining_after: &std::collections::HashMap<Uuid, i64>) {
        for (event, remaining) in remaining_after {
            if *remaining > 0 || self.sold_out_published.contains(event) {
                continue;
            }
            let key = event.to_string();
            let record = FutureRecord::to(&self.settings.sold_out_topic)
                .key(&key)
                .payload(SOLD_OUT_PAYLOAD);
            match self
                .producer
                .send(record, self.settings.produce_timeout)
                .await
            {
                Ok(_) => {
                    tracing::info!(%event, "event sold out: published");
                    self.sold_out_published.insert(*event);
                }
                Err((err, _)) => {
                    tracing::warn!(%event, error = %err, "cannot publish sold-out mark; will retry")
                }
            }
        }
    }
}

#[cfg(test)]
mod drain_tests {
    use super::undecided;

    #[test]
    fn undecided_counts_what_the_group_has_not_committed() {
        // Partition 0: 10 of 15 decided; partition 1: never committed, 3 retained; partition 2: done.
        assert_eq!(
            undecided(&[Some(10), None, Some(7)], &[(0, 15), (4, 7), (0, 7)]),
            8
        );
        assert_eq!(undecided(&[Some(15), Some(7)], &[(0, 15), (0, 7)]), 0);
        // A committed offset below the retention start counts from the retention start.
        assert_eq!(undecided(&[Some(1)], &[(5, 9)]), 4);
    }
}
