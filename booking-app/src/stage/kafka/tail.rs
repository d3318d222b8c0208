//! The background tasks that keep an API pod's `Backlog` current: a tail of the requests topic
//! (from the group's committed offsets) and of the sold-out topic, and a refresher that reads the
//! group's committed offsets every `status_refresh`. Both stop when the token is cancelled.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::backlog::Backlog;
use super::client::{KafkaSettings, committed_offsets, watermarks};
use super::metrics::GroupMetrics;
use super::record::BookingRecord;
use crate::stage::StageError;

/// How often the lag gauges are refreshed (a watermark round trip per partition).
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// While the view is full, how often the tail looks again without being woken.
const FULL_RECHECK: Duration = Duration::from_secs(1);

/// Positions the tail at the group's committed offsets and starts both tasks.
pub async fn start(
    settings: &KafkaSettings,
    backlog: Arc<Backlog>,
    reader: Arc<BaseConsumer>,
    metrics: GroupMetrics,
    cancel: CancellationToken,
) -> Result<(), StageError> {
    let partitions = backlog.partitions();
    // Right after the topic or the group appears the broker may still be electing a leader or
    // loading the group's coordinator: retry for a few seconds before giving up.
    let mut attempt = 0;
    let (committed, marks) = loop {
        let read = async {
            let committed = committed_offsets(&reader, &settings.topic, partitions).await?;
            Ok::<_, StageError>((
                committed,
                watermarks(&reader, &settings.topic, partitions).await?,
            ))
        };
        match read.await {
            Ok(read) => break read,
            Err(err) if attempt < 20 => {
                tracing::debug!(error = %err, "kafka tail: offsets not readable yet");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => return Err(err),
        }
    };
    let start: Vec<i64> = committed
        .iter()
        .zip(&marks)
        .map(|(c, (low, _))| c.unwrap_or(*low).max(*low))
        .collect();
    let high: Vec<i64> = marks.iter().map(|(_, high)| *high).collect();
    backlog.start(&start, &high);

    let consumer = settings.tail_consumer()?;
    let mut assignment = TopicPartitionList::new();
    for (p, offset) in start.iter().enumerate() {
        assignment.add_partition_offset(&settings.topic, p as i32, Offset::Offset(*offset))?;
    }
    assignment.add_partition_offset(&settings.sold_out_topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;

    tokio::spawn(tail(
        consumer,
        settings.topic.clone(),
        backlog.clone(),
        cancel.clone(),
    ));
    tokio::spawn(refresh(settings.clone(), reader, backlog, metrics, cancel));
    Ok(())
}

/// Most records the tail takes in one go: one lock of the view per batch rather than several per
/// record (at a sale every API pod reads back every request the pods accept).
const TAIL_BATCH: usize = 512;

async fn tail(
    consumer: StreamConsumer,
    topic: String,
    backlog: Arc<Backlog>,
    cancel: CancellationToken,
) {
    let mut last_warning: Option<Instant> = None;
    // One stream for the task's life: each `recv` would register and drop a waker of its own.
    let mut stream = consumer.stream();
    loop {
        // A full view reads no further: what is beyond it stays in the broker (and in
        // librdkafka's bounded prefetch) until decisions make room.
        if backlog.full() {
            let (requests, bytes) = backlog.usage();
            tracing::debug!(
                requests,
                bytes,
                "kafka tail: this pod's view of the queue is full; waiting for decisions"
            );
            while backlog.full() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::timeout(FULL_RECHECK, backlog.wait_room()) => {}
                }
            }
        }
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            message = stream.next() => message.expect("kafka streams never terminate"),
        };
        // What is already fetched comes along without waiting: a batch.
        let mut messages = Vec::with_capacity(TAIL_BATCH);
        let mut failed = None;
        match first {
            Ok(message) => messages.push(message),
            Err(err) => failed = Some(err),
        }
        while failed.is_none() && messages.len() < TAIL_BATCH {
            match stream.next().now_or_never().flatten() {
                Some(Ok(message)) => messages.push(message),
                Some(Err(err)) => failed = Some(err),
                None => break,
            }
        }
        take(&messages, &topic, &backlog);
        if let Some(err) = failed {
            // The broker is away; librdkafka reconnects by itself.
            if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(error = %err, "kafka tail: cannot read");
                last_warning = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One batch of the tail into the view: requests this pod holds already (it produced them, the
/// broker's acknowledgement entered them) are skipped undecoded; the others are decoded outside
/// the view's lock and entered; sold-out marks are set or lifted.
fn take(messages: &[impl Message], topic: &str, backlog: &Backlog) {
    let requests: Vec<&_> = messages.iter().filter(|m| m.topic() == topic).collect();
    let places: Vec<(i32, i64)> = requests
        .iter()
        .map(|m| (m.partition(), m.offset()))
        .collect();
    let held = backlog.held(&places);
    let batch = requests
        .iter()
        .zip(held)
        .map(|(message, held)| {
            let (partition, offset) = (message.partition(), message.offset());
            let requests = if held {
                Vec::new()
            } else {
                BookingRecord::decode(message.payload()).unwrap_or_else(|err| {
                    tracing::warn!(partition, offset, error = %err, "kafka tail: skipping record");
                    Vec::new()
                })
            };
            (partition, offset, requests)
        })
        .collect();
    backlog.tailed_batch(batch);
    for message in messages.iter().filter(|m| m.topic() != topic) {
        let event = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<Uuid>().ok());
        match event {
            // A tombstone (no payload) lifts the mark.
            Some(event) => backlog.set_sold_out(event, message.payload().is_some()),
            None => tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                "kafka tail: sold-out record without an event id"
            ),
        }
    }
}

async fn refresh(
    settings: KafkaSettings,
    reader: Arc<BaseConsumer>,
    backlog: Arc<Backlog>,
    metrics: GroupMetrics,
    cancel: CancellationToken,
) {
    let partitions = backlog.partitions();
    let mut interval = tokio::time::interval(settings.status_refresh);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_lag: Option<Instant> = None;
    let mut last_warning: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let committed = match committed_offsets(&reader, &settings.topic, partitions).await {
            Ok(committed) => committed,
            Err(err) => {
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %err, "kafka: cannot read the group's committed offsets");
                    last_warning = Some(Instant::now());
                }
                continue;
            }
        };
        backlog.decided_upto(&committed);
        if last_lag.is_none_or(|at| at.elapsed() >= LAG_INTERVAL)
            && let Ok(marks) = watermarks(&reader, &settings.topic, partitions).await
        {
            metrics.observe(&committed, &marks);
            last_lag = Some(Instant::now());
        }
    }
}

/// The same lag gauges for a process that has no backlog (a standalone worker).
pub async fn monitor_lag(
    settings: KafkaSettings,
    reader: Arc<BaseConsumer>,
    partitions: i32,
    metrics: GroupMetrics,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval(LAG_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        let offsets = committed_offsets(&reader, &settings.topic, partitions).await;
        let marks = watermarks(&reader, &settings.topic, partitions).await;
        if let (Ok(committed), Ok(marks)) = (offsets, marks) {
            metrics.observe(&committed, &marks);
        }
    }
}
