//! Environment variables the operator may set on a booking-app container, each declared by
//! booking-app's settings (`env = env::NAME`), and the values of them it writes.

/// Inventory stage: `postgres | redis | kafka`.
pub const STAGE: &str = "STAGE";
/// Address the HTTP API (and /healthz, /readyz) listens on.
pub const LISTEN_ADDR: &str = "LISTEN_ADDR";
/// Address `/metrics` listens on, apart from the API (so a NetworkPolicy can keep it private).
pub const METRICS_LISTEN_ADDR: &str = "METRICS_LISTEN_ADDR";
pub const DATABASE_URL: &str = "DATABASE_URL";
/// Postgres connections per pod.
pub const DB_POOL_SIZE: &str = "DB_POOL_SIZE";
pub const REDIS_URL: &str = "REDIS_URL";
/// Prefix of every Redis key: per sale, so sales sharing an external Redis never collide.
pub const REDIS_KEY_PREFIX: &str = "REDIS_KEY_PREFIX";
/// Comma-separated bootstrap servers.
pub const KAFKA_BROKERS: &str = "KAFKA_BROKERS";
pub const KAFKA_TOPIC: &str = "KAFKA_TOPIC";
/// Partitions booking-app creates the topic with (>= worker replicas).
pub const KAFKA_PARTITIONS: &str = "KAFKA_PARTITIONS";
/// Consumer group of the workers: per sale, like the topic.
pub const KAFKA_CONSUMER_GROUP: &str = "KAFKA_CONSUMER_GROUP";
/// API pods at stage kafka: most bytes of the queue's view a pod keeps (sized from its memory).
pub const KAFKA_MAX_QUEUED_BYTES: &str = "KAFKA_MAX_QUEUED_BYTES";
pub const MIGRATE_ON_START: &str = "MIGRATE_ON_START";
/// Runs the stage's worker inside `serve`; the operator runs a worker Deployment instead.
pub const RUN_WORKER: &str = "RUN_WORKER";
pub const LOG_FORMAT: &str = "LOG_FORMAT";
/// API pods: most requests inside the stage at once; the rest wait ADMISSION_WAIT_MS, then 503.
pub const MAX_IN_FLIGHT: &str = "MAX_IN_FLIGHT";
pub const ADMISSION_WAIT_MS: &str = "ADMISSION_WAIT_MS";
/// The sale's own event (from spec.event): `serve` creates it with this id if absent and never
/// changes an existing one. Id, name and tickets go together.
pub const SALE_EVENT_ID: &str = "SALE_EVENT_ID";
pub const SALE_EVENT_NAME: &str = "SALE_EVENT_NAME";
pub const SALE_EVENT_TICKETS: &str = "SALE_EVENT_TICKETS";
pub const SALE_EVENT_PER_USER_LIMIT: &str = "SALE_EVENT_PER_USER_LIMIT";
/// File holding the HS256 secret bearer tokens are verified (API) and signed (loadgen) with.
pub const AUTH_HS256_SECRET_FILE: &str = "AUTH_HS256_SECRET_FILE";
/// `spec.auth.jwks`: the identity provider's keys, as a URL or a file (a mounted ConfigMap key).
pub const AUTH_JWKS_URL: &str = "AUTH_JWKS_URL";
pub const AUTH_JWKS_FILE: &str = "AUTH_JWKS_FILE";
/// `spec.auth.issuer` / `audience`: required of every token, and carried by minted ones.
pub const AUTH_ISSUER: &str = "AUTH_ISSUER";
pub const AUTH_AUDIENCE: &str = "AUTH_AUDIENCE";

/// TLS to Postgres (libpq's `sslmode`, overriding the URL's) and the files it reads.
pub const DB_SSL_MODE: &str = "DB_SSL_MODE";
pub const DB_SSL_ROOT_CERT: &str = "DB_SSL_ROOT_CERT";
pub const DB_SSL_CLIENT_CERT: &str = "DB_SSL_CLIENT_CERT";
pub const DB_SSL_CLIENT_KEY: &str = "DB_SSL_CLIENT_KEY";
/// With a `rediss://` URL: the CA and client certificate files.
pub const REDIS_TLS_CA_FILE: &str = "REDIS_TLS_CA_FILE";
pub const REDIS_TLS_CERT_FILE: &str = "REDIS_TLS_CERT_FILE";
pub const REDIS_TLS_KEY_FILE: &str = "REDIS_TLS_KEY_FILE";
/// librdkafka's `security.protocol` of every Kafka client, and what SSL and SASL read.
pub const KAFKA_SECURITY_PROTOCOL: &str = "KAFKA_SECURITY_PROTOCOL";
pub const KAFKA_SSL_CA_FILE: &str = "KAFKA_SSL_CA_FILE";
pub const KAFKA_SSL_CERT_FILE: &str = "KAFKA_SSL_CERT_FILE";
pub const KAFKA_SSL_KEY_FILE: &str = "KAFKA_SSL_KEY_FILE";
pub const KAFKA_SASL_MECHANISM: &str = "KAFKA_SASL_MECHANISM";
pub const KAFKA_SASL_USERNAME: &str = "KAFKA_SASL_USERNAME";
/// The SASL password as a file (the operator never puts it in a variable's value).
pub const KAFKA_SASL_PASSWORD_FILE: &str = "KAFKA_SASL_PASSWORD_FILE";

/// Every variable above: what the operator may set on a booking-app container.
pub const ENV_VARS: [&str; 40] = [
    STAGE,
    LISTEN_ADDR,
    METRICS_LISTEN_ADDR,
    DATABASE_URL,
    DB_POOL_SIZE,
    REDIS_URL,
    REDIS_KEY_PREFIX,
    KAFKA_BROKERS,
    KAFKA_TOPIC,
    KAFKA_PARTITIONS,
    KAFKA_CONSUMER_GROUP,
    KAFKA_MAX_QUEUED_BYTES,
    MIGRATE_ON_START,
    RUN_WORKER,
    LOG_FORMAT,
    MAX_IN_FLIGHT,
    ADMISSION_WAIT_MS,
    SALE_EVENT_ID,
    SALE_EVENT_NAME,
    SALE_EVENT_TICKETS,
    SALE_EVENT_PER_USER_LIMIT,
    AUTH_HS256_SECRET_FILE,
    AUTH_JWKS_URL,
    AUTH_JWKS_FILE,
    AUTH_ISSUER,
    AUTH_AUDIENCE,
    DB_SSL_MODE,
    DB_SSL_ROOT_CERT,
    DB_SSL_CLIENT_CERT,
    DB_SSL_CLIENT_KEY,
    REDIS_TLS_CA_FILE,
    REDIS_TLS_CERT_FILE,
    REDIS_TLS_KEY_FILE,
    KAFKA_SECURITY_PROTOCOL,
    KAFKA_SSL_CA_FILE,
    KAFKA_SSL_CERT_FILE,
    KAFKA_SSL_KEY_FILE,
    KAFKA_SASL_MECHANISM,
    KAFKA_SASL_USERNAME,
    KAFKA_SASL_PASSWORD_FILE,
];

/// Values booking-app parses.
pub const LOG_FORMAT_JSON: &str = "json";
pub const DB_SSL_MODE_VERIFY_FULL: &str = "verify-full";
pub const KAFKA_SECURITY_SSL: &str = "SSL";
pub const KAFKA_SECURITY_SASL_SSL: &str = "SASL_SSL";
