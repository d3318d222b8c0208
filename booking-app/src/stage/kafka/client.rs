//! Kafka clients of stage kafka, configured in one place: the idempotent producer of the API, the
//! worker's group consumer, the API's tail and offset readers, and the topics they need (created
//! when missing). librdkafka calls that block are run on tokio's blocking pool.
//! Every client gets the same security settings (`KafkaSecurity`): TLS through librdkafka's
//! OpenSSL (broker host names verified), SASL PLAIN or SCRAM. They are checked once, at start,
//! so a half-configured client (a CA with PLAINTEXT, SASL without a password) never runs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{KafkaConfig, KafkaSaslMechanism, KafkaSecurityProtocol};
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
    /// How every client reaches the brokers.
    pub security: KafkaSecurity,
}

/// `security.protocol` and what it needs, as librdkafka properties.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSecurity {
    pub protocol: KafkaSecurityProtocol,
    /// SSL and SASL_SSL only.
    pub tls: Option<KafkaTls>,
    /// SASL_PLAINTEXT and SASL_SSL only.
    pub sasl: Option<KafkaSasl>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KafkaTls {
    /// None: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for brokers that ask for one.
    pub client: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, PartialEq)]
pub struct KafkaSasl {
    pub mechanism: KafkaSaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl KafkaSecurity {
    /// The settings of `config`, refused when they do not fit the protocol: TLS files without
    /// TLS, SASL settings without SASL, or SASL without its mechanism, user or password.
    pub fn from_config(config: &KafkaConfig) -> Result<Self, StageError> {
        let protocol = config.kafka_security_protocol;
        let invalid = |detail: &str| {
            StageError::Invalid(format!(
                "KAFKA_SECURITY_PROTOCOL={}: {detail}",
                protocol.as_str()
            ))
        };
        let tls_files = config.kafka_ssl_ca_file.is_some() || config.kafka_ssl_cert_file.is_some();
        if tls_files && !protocol.uses_tls() {
            return Err(invalid("KAFKA_SSL_* files need SSL or SASL_SSL"));
        }
        let sasl_set = config.kafka_sasl_mechanism.is_some()
            || config.kafka_sasl_username.is_some()
            || config.kafka_sasl_password.is_some()
            || config.kafka_sasl_password_file.is_some();
        if sasl_set && !protocol.uses_sasl() {
            return Err(invalid(
                "KAFKA_SASL_* settings need SASL_PLAINTEXT or SASL_SSL",
            ));
        }
        let tls = protocol.uses_tls().then(|| KafkaTls {
            ca_file: config.kafka_ssl_ca_file.clone(),
            client: config
                .kafka_ssl_cert_file
                .clone()
                .zip(config.kafka_ssl_key_file.clone()),
        });
        if let Some(tls) = &tls {
            let files = tls.ca_file.iter().map(|f| ("KAFKA_SSL_CA_FILE", f)).chain(
                tls.client.iter().flat_map(|(cert, key)| {
                    [("KAFKA_SSL_CERT_FILE", cert), ("KAFKA_SSL_KEY_FILE", key)]
                }),
            );
            for (setting, path) in files {
                std::fs::File::open(path).map_err(|e| {
                    StageError::Invalid(format!("{setting} {}: {e}", path.display()))
                })?;
            }
        }
        let sasl = if protocol.uses_sasl() {
            let mechanism = config
                .kafka_sasl_mechanism
                .ok_or_else(|| invalid("needs KAFKA_SASL_MECHANISM"))?;
            let username = config
                .kafka_sasl_username
                .clone()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| invalid("needs KAFKA_SASL_USERNAME"))?;
            let password = match (
                &config.kafka_sasl_password,
                &config.kafka_sasl_password_file,
            ) {
                (Some(password), _) => password.clone(),
                (None, Some(path)) => read_password(path)?,
                (None, None) => {
                    return Err(invalid(
                        "needs KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD)",
                    ));
                }
            };
            Some(KafkaSasl {
                mechanism,
                username,
                password,
            })
        } else {
            None
        };
        Ok(Self {
            protocol,
            tls,
            sasl,
        })
    }

    /// Sets these properties on a client's configuration.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        if let Some(tls) = &self.tls {
            // librdkafka's default since 2.0, stated so no build or version can turn it off.
            config.set("ssl.endpoint.identification.algorithm", "https");
            if let Some(ca) = &tls.ca_file {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
            if let Some((cert, key)) = &tls.client {
                config
                    .set("ssl.certificate.location", cert.to_string_lossy())
                    .set("ssl.key.location", key.to_string_lossy());
            }
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
    }
}

/// A password file as Secrets and `echo` write it: one trailing newline is not part of it.
fn read_password(path: &std::path::Path) -> Result<String, StageError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StageError::Invalid(format!("KAFKA_SASL_PASSWORD_FILE {}: {e}", path.display()))
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
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
            security: KafkaSecurity::from_config(config)?,
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
        self.security.apply(&mut config);
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
    use clap::Parser;

    fn kafka_config(args: &[&str]) -> KafkaConfig {
        let base = [
            "booking-app",
            "--database-url",
            "x",
            "--kafka-brokers",
            "b:9092",
        ];
        crate::config::Config::try_parse_from(base.iter().chain(args))
            .expect("parses")
            .kafka
    }

    fn refusal(args: &[&str]) -> String {
        KafkaSecurity::from_config(&kafka_config(args))
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn plaintext_is_the_default_and_sets_no_tls_or_sasl() {
        let security = KafkaSecurity::from_config(&kafka_config(&[])).unwrap();
        assert_eq!(security.protocol, KafkaSecurityProtocol::Plaintext);
        let mut config = ClientConfig::new();
        security.apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(config.get("sasl.mechanism"), None);
        assert_eq!(config.get("ssl.ca.location"), None);
    }

    #[test]
    fn sasl_ssl_sets_every_property_and_reads_the_password_file() {
        let dir = std::env::temp_dir().join(format!("kafka-sec-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, password) = (dir.join("ca.crt"), dir.join("password"));
        std::fs::write(&ca, "pem").unwrap();
        std::fs::write(&password, "s3cret\n").unwrap();
        let settings = KafkaSettings::from_config(&kafka_config(&[
            "--kafka-security-protocol",
            "SASL_SSL",
            "--kafka-ssl-ca-file",
            ca.to_str().unwrap(),
            "--kafka-sasl-mechanism",
            "SCRAM-SHA-512",
            "--kafka-sasl-username",
            "booking",
            "--kafka-sasl-password-file",
            password.to_str().unwrap(),
        ]))
        .unwrap();
        // Every client is built from `base`, so every client carries them.
        let config = settings.base("any");
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("ssl.ca.location"), ca.to_str());
        assert_eq!(
            config.get("ssl.endpoint.identification.algorithm"),
            Some("https")
        );
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("booking"));
        assert_eq!(config.get("sasl.password"), Some("s3cret"));
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "the password is never printed"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn settings_that_do_not_fit_the_protocol_are_refused() {
        assert!(refusal(&["--kafka-ssl-ca-file", "/ca.crt"]).contains("need SSL or SASL_SSL"));
        assert!(refusal(&["--kafka-sasl-username", "u"]).contains("need SASL_PLAINTEXT"));
        let sasl = ["--kafka-security-protocol", "SASL_SSL"];
        assert!(refusal(&sasl).contains("KAFKA_SASL_MECHANISM"));
        let with_mechanism = [&sasl[..], &["--kafka-sasl-mechanism", "PLAIN"]].concat();
        assert!(refusal(&with_mechanism).contains("KAFKA_SASL_USERNAME"));
        let with_user = [&with_mechanism[..], &["--kafka-sasl-username", "u"]].concat();
        assert!(refusal(&with_user).contains("KAFKA_SASL_PASSWORD_FILE"));
        let missing_ca = [
            "--kafka-security-protocol",
            "SSL",
            "--kafka-ssl-ca-file",
            "/nope",
        ];
        assert!(refusal(&missing_ca).contains("KAFKA_SSL_CA_FILE /nope"));
    }

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
