//! Kafka clients of stage kafka, configured in one place: the idempotent producer of the API, the
//! worker's group consumer, the API's tail and offset readers, and the topics they need (created
//! when missing). librdkafka calls that block are run on tokio's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::stage::StageError;

/// Consumers (the API's tail, the workers) ask the broker for at least this much per fetch...
const FETCH_MIN_BYTES: &str = "65536";
/// ...or whatever is there after this long.
const FETCH_WAIT_MS: &str = "20";

/// How long a metadata or offsets round trip may take before it counts as "Kafka unavailable".
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Stage kafka's settings, resolved from `KafkaConfig` (README "Configuration contract").
/// Most KiB of records a consumer's librdkafka prefetches (the tail ahead of the view, a worker
/// ahead of its batches; the default is 64 MiB, more than the view's whole cap). 4 MiB is still
/// several worker batches of the largest records.
pub const PREFETCH_KBYTES: usize = 4 * 1024;

/// Largest fetch answer the tail asks for (librdkafka wants it above `message.max.bytes`, 1 MB).
pub const TAIL_FETCH_MAX_BYTES: usize = 2 * 1024 * 1024;

/// The dead-letter topic is the requests topic's name with this suffix.
pub const DEAD_LETTER_SUFFIX: &str = ".dlq";

#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    /// Booking requests, keyed by event id.
    pub topic: String,
    /// Partitions of `topic` when it is created here.
    pub partitions: i32,
    /// Compacted topic of sold-out event ids, written by workers, read by every API pod.
    pub sold_out_topic: String,
    /// Records a worker could not decide (not a booking request, invalid values, unknown event),
    /// kept with the reason in a header instead of stopping the queue.
    pub dead_letter_topic: String,
    /// The workers' consumer group (API pods read its committed offsets, never join it).
    pub group: String,
    /// Longest the API waits for the broker's acknowledgement before answering 503.
    pub produce_timeout: Duration,
    /// How long the producer gathers records into one batch.
    pub linger: Duration,
    /// Most undecided requests an API pod's backlog holds before its door sheds.
    pub max_queued: usize,
    /// Most bytes (estimated) of undecided requests that backlog holds.
    pub max_queued_bytes: usize,
    /// Most requests a worker decides in one database transaction.
    pub batch_size: usize,
    /// How long a worker waits for more records once a batch has its first one.
    pub batch_linger: Duration,
    /// How often API pods read the group's committed offsets (status, position, push).
    pub status_refresh: Duration,
}

impl KafkaSettings {
    pub fn from_config(config: &KafkaConfig) -> Result<Self, StageError> {
        let brokers = config
            .kafka_brokers
            .clone()
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| StageError::Invalid("stage kafka needs KAFKA_BROKERS".into()))?;
        if config.kafka_partitions < 1 {
            return Err(StageError::Invalid(
                "KAFKA_PARTITIONS must be at least 1".into(),
            ));
        }
        Ok(Self {
            brokers,
            topic: config.kafka_topic.clone(),
            partitions: config.kafka_partitions,
            sold_out_topic: format!("{}-sold-out", config.kafka_topic),
            dead_letter_topic: format!("{}{DEAD_LETTER_SUFFIX}", config.kafka_topic),
            group: config.kafka_consumer_group.clone(),
            produce_timeout: Duration::from_millis(config.kafka_produce_timeout_ms.max(1)),
            linger: Duration::from_millis(config.kafka_linger_ms),
            max_queued: config.kafka_max_queued.max(1),
            max_queued_bytes: config.kafka_max_queued_bytes.max(1),
            batch_size: config.kafka_batch_size.max(1),
            batch_linger: Duration::from_millis(config.kafka_batch_linger_ms),
            status_refresh: Duration::from_millis(config.kafka_status_refresh_ms.max(10)),
        })
    }

    fn base(&self, client_id: &str) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            // A restarted broker is found again within a second instead of up to ten.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set("log_level", "4");
        config
    }

    /// The API's producer: idempotent, `acks=all`, and it gives up on a record after
    /// `produce_timeout`, so a request is answered 503 instead of waiting for a broker forever.
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        self.base("booking-api")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                self.produce_timeout.as_millis().to_string(),
            )
            .set("linger.ms", self.linger.as_millis().to_string())
            .create()
    }

    /// A worker's member of the consumer group. Offsets are committed by hand, after the
    /// database commit; a member that dies is replaced after the session timeout.
    pub fn group_consumer<C: rdkafka::consumer::ConsumerContext + 'static>(
        &self,
        context: C,
    ) -> Result<rdkafka::consumer::StreamConsumer<C>, KafkaError> {
        self.base("booking-worker")
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string())
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("fetch.min.bytes", FETCH_MIN_BYTES)
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create_with_context(context)
    }

    /// A consumer that only ever `assign`s partitions (never joins a group, never commits):
    /// the API pod's tail of the requests and sold-out topics.
    pub fn tail_consumer(&self) -> Result<rdkafka::consumer::StreamConsumer, KafkaError> {
        self.base("booking-api-tail")
            // The prefetch is memory outside the view's cap: bound it (librdkafka's default is
            // 64 MiB) so a tail that waits for room holds little more than its view.
            .set("queued.max.messages.kbytes", PREFETCH_KBYTES.to_string())
            .set(
                "group.id",
                format!("{}-tail-{}", self.group, uuid::Uuid::new_v4()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Under a sale, fetch in batches rather than a round trip per few records (the
            // broker answers once FETCH_MIN_BYTES are there or after FETCH_WAIT): far less CPU
            // in the pod and the broker, for at most FETCH_WAIT of staleness in this pod's view.
            .set("fetch.min.bytes", FETCH_MIN_BYTES)
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
    }

    /// A client carrying the workers' group id, used only to read that group's committed
    /// offsets and the topic's watermarks. It never subscribes, so it never joins the group.
    pub fn offsets_reader(&self) -> Result<BaseConsumer, KafkaError> {
        self.base("booking-offsets")
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
    }

    /// Creates the requests topic (`partitions`, broker-default replication) and the compacted
    /// sold-out topic if they are missing, then returns the requests topic's partition count
    /// (which is the existing one when the topic was already there).
    pub async fn ensure_topics(&self) -> Result<i32, StageError> {
        let admin: AdminClient<DefaultClientContext> = self.base("booking-admin").create()?;
        let topics = [
            NewTopic::new(&self.topic, self.partitions, TopicReplication::Fixed(-1)),
            NewTopic::new(&self.sold_out_topic, 1, TopicReplication::Fixed(-1))
                .set("cleanup.policy", "compact"),
            NewTopic::new(&self.dead_letter_topic, 1, TopicReplication::Fixed(-1)),
        ];
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results =
            tokio::time::timeout(ADMIN_TIMEOUT * 2, admin.create_topics(&topics, &options))
                .await
                .map_err(|_| unavailable("creating topics timed out"))??;
        for result in results {
            match result {
                Ok(name) => tracing::info!(topic = %name, "created Kafka topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(unavailable(format!("cannot create topic {name}: {code}")));
                }
            }
        }
        let reader = Arc::new(self.offsets_reader()?);
        // A topic that was just created can take a moment to appear in metadata.
        for _ in 0..50 {
            let n = partition_count(&reader, &self.topic).await?;
            if n > 0 {
                if n != self.partitions {
                    tracing::warn!(topic = %self.topic, existing = n, configured = self.partitions,
                        "topic exists with another partition count; using the existing one");
                }
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(unavailable(format!(
            "topic {} has no partitions in metadata",
            self.topic
        )))
    }
}

pub fn unavailable(detail: impl Into<String>) -> StageError {
    StageError::Unavailable {
        store: "kafka",
        detail: detail.into(),
    }
}

/// Runs a blocking librdkafka call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, StageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(|e| unavailable(e.to_string())),
        Err(join) => Err(StageError::Internal(format!("kafka call panicked: {join}"))),
    }
}

/// Number of partitions of `topic`; 0 until the broker knows it and every partition has a
/// leader (a topic just created has none for a moment, and offset requests fail meanwhile).
pub async fn partition_count(reader: &Arc<BaseConsumer>, topic: &str) -> Result<i32, StageError> {
    let (reader, topic) = (reader.clone(), topic.to_owned());
    blocking(move || {
        let metadata = reader.fetch_metadata(Some(&topic), ADMIN_TIMEOUT)?;
        let Some(t) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
        else {
            return Ok(0);
        };
        let led = t
            .partitions()
            .iter()
            .all(|p| p.error().is_none() && p.leader() >= 0);
        Ok(if led { t.partitions().len() as i32 } else { 0 })
    })
    .await
}

/// The group's committed offset per partition (the next record it will decide); `None` where
/// the group has not committed yet, i.e. nothing of that partition was decided.
pub async fn committed_offsets(
    reader: &Arc<BaseConsumer>,
    topic: &str,
    partitions: i32,
) -> Result<Vec<Option<i64>>, StageError> {
    let (reader, topic) = (reader.clone(), topic.to_owned());
    blocking(move || {
        let mut tpl = TopicPartitionList::with_capacity(partitions as usize);
        tpl.add_partition_range(&topic, 0, partitions - 1);
        let committed = reader.committed_offsets(tpl, ADMIN_TIMEOUT)?;
        Ok((0..partitions)
            .map(
                |p| match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                },
            )
            .collect())
    })
    .await
}

/// The (low, high) watermark of every partition: the oldest retained record and the offset the
/// next record will get.
pub async fn watermarks(
    reader: &Arc<BaseConsumer>,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i64, i64)>, StageError> {
    let (reader, topic) = (reader.clone(), topic.to_owned());
    blocking(move || {
        (0..partitions)
            .map(|p| reader.fetch_watermarks(&topic, p, ADMIN_TIMEOUT))
            .collect()
    })
    .await
}

/// Records of a partition the group has not decided yet: from its committed offset (or the
/// oldest retained record) to the high watermark.
pub fn undecided(committed: Option<i64>, low: i64, high: i64) -> i64 {
    (high - committed.unwrap_or(low).max(low)).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecided_counts_from_the_committed_offset() {
        assert_eq!(undecided(Some(40), 0, 100), 60);
        assert_eq!(undecided(None, 0, 100), 100);
        assert_eq!(
            undecided(None, 30, 100),
            70,
            "retention removed the first 30"
        );
        assert_eq!(
            undecided(Some(10), 30, 100),
            70,
            "a commit below retention counts from low"
        );
        assert_eq!(undecided(Some(100), 0, 100), 0);
    }
}
