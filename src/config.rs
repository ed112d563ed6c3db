//! Typed configuration read once from the environment (and `.env`, when present).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::auth::ApiKeys;
use crate::worker::PoolSettings;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// Normalised: SQLAlchemy's `sqlite:///x` form is rewritten to sqlx's `sqlite://x`.
    pub database_url: String,
    /// How long a write waits for SQLite's writer, or any query for a pooled connection,
    /// before it is answered 503.
    pub database_busy_timeout: Duration,
    pub redis_url: Option<String>,
    /// Prepended to every Redis key, so several deployments (or tests) can share one Redis.
    pub redis_key_prefix: String,
    /// How long a read of Redis's change epoch is served from without another; every change
    /// waits about this long before it returns (see `cache::redis_tier`). Zero: every request
    /// waits for a read of its own (shared with the requests waiting beside it).
    pub redis_epoch_lease: Duration,
    pub cache_ttl: Duration,
    pub log_format: LogFormat,
    pub max_body_bytes: usize,
    pub compute_timeout: Duration,
    pub compute_max_rows: usize,
    /// A compute worker's memory ceiling (RLIMIT_DATA).
    pub compute_memory_limit_mb: u64,
    /// Polars threads in each compute worker.
    pub compute_threads: usize,
    /// Compute workers running at once.
    pub compute_workers: usize,
    /// Computes that may wait for a worker; past this they are answered 503.
    pub compute_queue_size: usize,
    /// A compute result larger than this (in MiB, as Arrow IPC) is refused.
    pub compute_max_result_mb: usize,
    /// The executable started as a compute worker; `None`: this process's own. Tests point it
    /// at the built server binary, since their own executable is the test harness.
    pub compute_worker_program: Option<PathBuf>,
    /// Where each compute worker's own temporary directory is made; `None`: the system's
    /// (`TMPDIR`). Tests point it at a directory they can look into.
    pub compute_scratch_dir: Option<PathBuf>,
    /// Bytes of whole versions batch serving may hold in memory (measured on what is held);
    /// a version bigger than this is served entity by entity.
    pub batch_snapshot_max_bytes: u64,
    /// Bytes of decoded snapshots kept for `as_of` serving.
    pub snapshot_cache_max_bytes: u64,
    /// Events a replica holds for aggregation features' online answers, over all of them.
    pub aggregation_max_held_events: usize,
    /// Of a training set written as a dataset: the aggregation features' events a worker
    /// evaluates in one pass; the rest wait in partition files on its local disk.
    pub aggregation_pass_events: u64,
    /// Snapshots superseded longer ago than this are pruned (never a version's newest).
    pub snapshot_retention: Duration,
    /// Empty: the API is open.
    pub api_keys: ApiKeys,
    /// Web origins (`scheme://host[:port]`) allowed to call the API from a browser: CORS
    /// answers for them, and a change sent with any other `Origin` (the server's own aside)
    /// is refused.
    pub cors_allowed_origins: Vec<String>,
    /// Host names (lowercase, without port) requests may be addressed to, besides `localhost`
    /// and IP addresses; `*` admits any. Anything else is refused (421): a page whose name
    /// re-resolves to this server (DNS rebinding) must not reach it.
    pub allowed_hosts: Vec<String>,
    /// Whether this replica takes part in scheduled refresh (one replica schedules at a time).
    pub refresh_scheduler: bool,
    /// How long the scheduler lease lasts unrenewed: a dead scheduler is replaced within it
    /// (plus one tick, a quarter of it).
    pub scheduler_lease: Duration,
    /// How long a stream's lease lasts unrenewed: one replica commits each stream, and another
    /// takes over within this (plus a tick) after it dies.
    pub stream_lease: Duration,
    /// How this service authenticates to the NATS servers streams follow: a token
    /// (`NATS_TOKEN`), or a user and password (`NATS_USER`, `NATS_PASSWORD`). From the
    /// environment only, never from a request; never shown.
    pub nats_auth: NatsAuth,
    /// TLS for NATS servers: certificate authorities to trust and a client certificate
    /// (`NATS_TLS_CA_FILE`, `NATS_TLS_CERT_FILE`, `NATS_TLS_KEY_FILE`).
    pub nats_tls: NatsTls,
    /// How this service connects to the Kafka brokers streams follow: TLS and SASL settings
    /// (`KAFKA_SECURITY_PROTOCOL`, `KAFKA_SASL_*`, `KAFKA_SSL_*`). From the environment only,
    /// never from a request; the password is never shown.
    pub kafka_auth: KafkaAuth,
    /// Where raw tables (Delta) and snapshots (Parquet) live: a directory or `s3://bucket/prefix`.
    /// `None`: `data` beside the SQLite file (`./data` for Postgres).
    pub data_dir: Option<String>,
    /// S3 settings (`aws_endpoint_url`, `aws_region`, `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_session_token`, `aws_allow_http`), from the `AWS_*`
    /// variables of the same names.
    pub storage_options: BTreeMap<String, String>,
    /// Where external datasets may be registered from, besides `data_dir`.
    pub external_source_prefixes: Vec<String>,
    /// The Spark Connect server (`sc://host:port`) features with the `spark` engine run on;
    /// `None`: no Spark, and such features are refused.
    pub spark_connect_url: Option<String>,
    /// For tests only (`FEATURE_STORE_TEST_CLOCK_SKEW_SECONDS`, like the failpoint): this
    /// process's clock reads this many seconds off, to show that no decision shared across
    /// replicas rests on it (the database's clock decides them).
    pub test_clock_skew_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8000,
            database_url: "sqlite://./feature_store.db".into(),
            database_busy_timeout: Duration::from_secs(5),
            redis_url: None,
            redis_key_prefix: "feature-store:".into(),
            redis_epoch_lease: Duration::from_millis(5),
            cache_ttl: Duration::from_secs(3600),
            log_format: LogFormat::Text,
            max_body_bytes: 64 * 1024 * 1024,
            compute_timeout: Duration::from_secs(30),
            compute_max_rows: 10_000_000,
            compute_memory_limit_mb: 4096,
            compute_threads: half_the_cores(),
            compute_workers: half_the_cores(),
            compute_queue_size: 16,
            compute_max_result_mb: 1024,
            compute_worker_program: None,
            compute_scratch_dir: None,
            batch_snapshot_max_bytes: 512 * 1024 * 1024,
            snapshot_cache_max_bytes: 256 * 1024 * 1024,
            aggregation_max_held_events: 50_000_000,
            aggregation_pass_events: 8_000_000,
            snapshot_retention: Duration::from_secs(365 * 86_400),
            api_keys: ApiKeys::default(),
            cors_allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            refresh_scheduler: true,
            scheduler_lease: Duration::from_secs(10),
            stream_lease: Duration::from_secs(10),
            nats_auth: NatsAuth::None,
            nats_tls: NatsTls::default(),
            kafka_auth: KafkaAuth::default(),
            data_dir: None,
            storage_options: BTreeMap::new(),
            external_source_prefixes: Vec::new(),
            spark_connect_url: None,
            test_clock_skew_seconds: 0,
        }
    }
}

/// The `AWS_*` variables read into the storage options, by the option each one sets.
const STORAGE_VARIABLES: &[(&str, &str)] = &[
    ("AWS_ENDPOINT_URL", "aws_endpoint_url"),
    ("AWS_REGION", "aws_region"),
    ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
    ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
    ("AWS_SESSION_TOKEN", "aws_session_token"),
    ("AWS_ALLOW_HTTP", "aws_allow_http"),
];

/// Half the machine's cores, at least one: the default share of compute.
fn half_the_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Hide credentials embedded in URLs (`scheme://user:secret@host`).
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database_url", &redact(&self.database_url))
            .field("database_busy_timeout", &self.database_busy_timeout)
            .field("redis_url", &self.redis_url.as_deref().map(redact))
            .field("redis_key_prefix", &self.redis_key_prefix)
            .field("redis_epoch_lease", &self.redis_epoch_lease)
            .field("cache_ttl", &self.cache_ttl)
            .field("log_format", &self.log_format)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("compute_timeout", &self.compute_timeout)
            .field("compute_max_rows", &self.compute_max_rows)
            .field("compute_memory_limit_mb", &self.compute_memory_limit_mb)
            .field("compute_threads", &self.compute_threads)
            .field("compute_workers", &self.compute_workers)
            .field("compute_queue_size", &self.compute_queue_size)
            .field("compute_max_result_mb", &self.compute_max_result_mb)
            .field("batch_snapshot_max_bytes", &self.batch_snapshot_max_bytes)
            .field("snapshot_cache_max_bytes", &self.snapshot_cache_max_bytes)
            .field(
                "aggregation_max_held_events",
                &self.aggregation_max_held_events,
            )
            .field("aggregation_pass_events", &self.aggregation_pass_events)
            .field("snapshot_retention", &self.snapshot_retention)
            .field("api_keys", &self.api_keys)
            .field("cors_allowed_origins", &self.cors_allowed_origins)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("refresh_scheduler", &self.refresh_scheduler)
            .field("scheduler_lease", &self.scheduler_lease)
            .field("stream_lease", &self.stream_lease)
            .field("nats_auth", &self.nats_auth)
            .field("nats_tls", &self.nats_tls)
            .field("kafka_auth", &self.kafka_auth)
            .field("data_dir", &self.data_dir)
            .field(
                "storage_options",
                &self
                    .storage_options
                    .iter()
                    .map(|(k, v)| {
                        let shown = if k.contains("secret") || k.contains("token") {
                            "***"
                        } else {
                            v.as_str()
                        };
                        (k.as_str(), shown)
                    })
                    .collect::<BTreeMap<_, _>>(),
            )
            .field("external_source_prefixes", &self.external_source_prefixes)
            .field("spark_connect_url", &self.spark_connect_url)
            .field("test_clock_skew_seconds", &self.test_clock_skew_seconds)
            .finish()
    }
}

/// Credentials for NATS servers; `Debug` shows which kind, never the secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    #[default]
    None,
    Token(String),
    UserPassword(String, String),
}

impl NatsAuth {
    fn from_env(
        token: Option<String>,
        user: Option<String>,
        password: Option<String>,
    ) -> Result<NatsAuth, ConfigError> {
        match (token, user, password) {
            (None, None, None) => Ok(NatsAuth::None),
            (Some(token), None, None) => Ok(NatsAuth::Token(token)),
            (None, Some(user), Some(password)) => Ok(NatsAuth::UserPassword(user, password)),
            (Some(_), _, _) => Err(ConfigError(
                "NATS_TOKEN and NATS_USER/NATS_PASSWORD: set one or the other".into(),
            )),
            _ => Err(ConfigError(
                "NATS_USER and NATS_PASSWORD go together".into(),
            )),
        }
    }
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::UserPassword(user, _) => write!(f, "UserPassword({user:?}, ***)"),
        }
    }
}

/// TLS files for NATS: with any of them, the connection must be TLS (whatever the URL's
/// scheme). Without them a `tls://` URL, or a server that asks for TLS, is checked against the
/// system's certificate authorities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM file of the certificate authorities to trust.
    pub ca_file: Option<String>,
    /// A client certificate and its key (PEM files), for servers that ask for one.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

impl NatsTls {
    fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<NatsTls, ConfigError> {
        let file = |name: &str| -> Result<Option<String>, ConfigError> {
            let Some(path) = get(name)
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
            else {
                return Ok(None);
            };
            if !std::path::Path::new(&path).is_file() {
                return Err(ConfigError(format!("{name}={path:?}: no such file")));
            }
            Ok(Some(path))
        };
        let tls = NatsTls {
            ca_file: file("NATS_TLS_CA_FILE")?,
            cert_file: file("NATS_TLS_CERT_FILE")?,
            key_file: file("NATS_TLS_KEY_FILE")?,
        };
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(ConfigError(
                "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together".into(),
            ));
        }
        Ok(tls)
    }

    /// Whether any TLS file is set (then TLS is required).
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some()
    }
}

/// How the Kafka brokers are spoken to: librdkafka's `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KafkaProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }
}

/// A SASL login: the mechanism (`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`), a user and
/// a password.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSasl {
    pub mechanism: String,
    pub username: String,
    pub password: String,
}

/// TLS and SASL settings for every Kafka stream of this service; `Debug` never shows the
/// passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaAuth {
    pub protocol: KafkaProtocol,
    pub sasl: Option<KafkaSasl>,
    /// PEM file of the certificate authorities to trust (the system's when unset).
    pub ssl_ca_location: Option<String>,
    /// A client certificate and its key (PEM files), for brokers that ask for one.
    pub ssl_certificate_location: Option<String>,
    pub ssl_key_location: Option<String>,
    pub ssl_key_password: Option<String>,
}

/// The SASL mechanisms librdkafka has without Kerberos (the `gssapi` feature is not built).
const KAFKA_SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

impl KafkaAuth {
    fn from_env(get: &impl Fn(&str) -> Option<String>) -> Result<KafkaAuth, ConfigError> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let protocol = match set("KAFKA_SECURITY_PROTOCOL")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("plaintext") => KafkaProtocol::Plaintext,
            Some("ssl") => KafkaProtocol::Ssl,
            Some("sasl_plaintext") => KafkaProtocol::SaslPlaintext,
            Some("sasl_ssl") => KafkaProtocol::SaslSsl,
            Some(other) => {
                return Err(ConfigError(format!(
                    "KAFKA_SECURITY_PROTOCOL={other:?}: expected plaintext, ssl, sasl_plaintext \
                     or sasl_ssl"
                )))
            }
        };
        let sasl_names = [
            "KAFKA_SASL_MECHANISM",
            "KAFKA_SASL_USERNAME",
            "KAFKA_SASL_PASSWORD",
        ];
        let sasl = if protocol.sasl() {
            let [mechanism, username, password] = sasl_names.map(set);
            let (Some(mechanism), Some(username), Some(password)) = (mechanism, username, password)
            else {
                return Err(ConfigError(format!(
                    "KAFKA_SECURITY_PROTOCOL={}: set KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME \
                     and KAFKA_SASL_PASSWORD",
                    protocol.as_str()
                )));
            };
            let mechanism = mechanism.trim().to_ascii_uppercase();
            if !KAFKA_SASL_MECHANISMS.contains(&mechanism.as_str()) {
                return Err(ConfigError(format!(
                    "KAFKA_SASL_MECHANISM={mechanism:?}: expected one of {}",
                    KAFKA_SASL_MECHANISMS.join(", ")
                )));
            }
            Some(KafkaSasl {
                mechanism,
                username: username.trim().to_string(),
                password,
            })
        } else {
            if let Some(name) = sasl_names.iter().find(|n| set(n).is_some()) {
                return Err(ConfigError(format!(
                    "{name} is set but KAFKA_SECURITY_PROTOCOL is {}: use sasl_plaintext or \
                     sasl_ssl",
                    protocol.as_str()
                )));
            }
            None
        };
        let file = |name: &str| -> Result<Option<String>, ConfigError> {
            let Some(path) = set(name).map(|p| p.trim().to_string()) else {
                return Ok(None);
            };
            if !protocol.tls() {
                return Err(ConfigError(format!(
                    "{name} is set but KAFKA_SECURITY_PROTOCOL is {}: use ssl or sasl_ssl",
                    protocol.as_str()
                )));
            }
            if !std::path::Path::new(&path).is_file() {
                return Err(ConfigError(format!("{name}={path:?}: no such file")));
            }
            Ok(Some(path))
        };
        let auth = KafkaAuth {
            protocol,
            sasl,
            ssl_ca_location: file("KAFKA_SSL_CA_LOCATION")?,
            ssl_certificate_location: file("KAFKA_SSL_CERTIFICATE_LOCATION")?,
            ssl_key_location: file("KAFKA_SSL_KEY_LOCATION")?,
            ssl_key_password: set("KAFKA_SSL_KEY_PASSWORD"),
        };
        if auth.ssl_certificate_location.is_some() != auth.ssl_key_location.is_some() {
            return Err(ConfigError(
                "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together".into(),
            ));
        }
        if auth.ssl_key_password.is_some() && auth.ssl_key_location.is_none() {
            return Err(ConfigError(
                "KAFKA_SSL_KEY_PASSWORD is set without KAFKA_SSL_KEY_LOCATION".into(),
            ));
        }
        Ok(auth)
    }

    /// The librdkafka settings these stand for.
    pub fn settings(&self) -> Vec<(&'static str, &str)> {
        let mut settings = vec![("security.protocol", self.protocol.as_str())];
        if let Some(sasl) = &self.sasl {
            settings.push(("sasl.mechanism", sasl.mechanism.as_str()));
            settings.push(("sasl.username", sasl.username.as_str()));
            settings.push(("sasl.password", sasl.password.as_str()));
        }
        for (name, value) in [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
            ("ssl.key.password", &self.ssl_key_password),
        ] {
            if let Some(value) = value {
                settings.push((name, value.as_str()));
            }
        }
        settings
    }
}

impl fmt::Debug for KafkaAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaAuth")
            .field("protocol", &self.protocol)
            .field(
                "sasl",
                &self
                    .sasl
                    .as_ref()
                    .map(|s| format!("{} {:?} ***", s.mechanism, s.username)),
            )
            .field("ssl_ca_location", &self.ssl_ca_location)
            .field("ssl_certificate_location", &self.ssl_certificate_location)
            .field("ssl_key_location", &self.ssl_key_location)
            .field(
                "ssl_key_password",
                &self.ssl_key_password.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

fn parse<T: FromStr>(name: &str, value: Option<String>, default: T) -> Result<T, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError(format!("{name}={v:?} is not valid"))),
    }
}

/// Accept sqlx URLs as they are and the original's SQLAlchemy forms:
/// `sqlite:///./x.db` (relative) and `sqlite:////abs/x.db` (absolute); `postgresql://` too.
pub fn normalize_database_url(url: &str) -> String {
    let url = url.trim();
    if let Some(path) = url.strip_prefix("sqlite:///") {
        return format!("sqlite://{path}");
    }
    if let Some(rest) = url.strip_prefix("postgresql+psycopg2://") {
        return format!("postgres://{rest}");
    }
    url.to_string()
}

/// `https://a.example,http://localhost:3000`: each an origin as browsers send it, lowercased,
/// with no path and no trailing slash.
fn parse_origins(spec: &str) -> Result<Vec<String>, ConfigError> {
    spec.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let origin = o.trim_end_matches('/').to_ascii_lowercase();
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains('/') => Ok(origin),
                _ => Err(ConfigError(format!(
                    "CORS_ALLOWED_ORIGINS: {o:?} is not an origin like https://app.example.com"
                ))),
            }
        })
        .collect()
}

fn parse_hosts(spec: &str) -> Result<Vec<String>, ConfigError> {
    spec.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            let host = h.trim_end_matches('.').to_ascii_lowercase();
            let valid = host == "*"
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
            match valid && !host.is_empty() {
                true => Ok(host),
                false => Err(ConfigError(format!(
                    "ALLOWED_HOSTS: {h:?} is not a host name like features.example.com (no scheme or port)"
                ))),
            }
        })
        .collect()
}

impl Config {
    /// Read `.env` if present, then the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = Config::default();
        let log_format = match get("LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "LOG_FORMAT={other:?}: expected text or json"
                )))
            }
        };
        let database_url = match get("DATABASE_URL") {
            Some(v) if !v.trim().is_empty() => normalize_database_url(&v),
            _ => d.database_url.clone(),
        };
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(ConfigError(format!(
                "DATABASE_URL {} must start with sqlite: or postgres://",
                redact(&database_url)
            )));
        }
        let config = Config {
            host: parse("HOST", get("HOST"), d.host)?,
            port: parse("PORT", get("PORT"), d.port)?,
            database_url,
            database_busy_timeout: Duration::from_millis(parse(
                "DATABASE_BUSY_TIMEOUT_MS",
                get("DATABASE_BUSY_TIMEOUT_MS"),
                d.database_busy_timeout.as_millis() as u64,
            )?),
            redis_url: get("REDIS_URL").filter(|v| !v.trim().is_empty()),
            redis_key_prefix: get("REDIS_KEY_PREFIX")
                .filter(|v| !v.trim().is_empty())
                .unwrap_or(d.redis_key_prefix.clone()),
            redis_epoch_lease: Duration::from_millis(parse(
                "REDIS_EPOCH_LEASE_MS",
                get("REDIS_EPOCH_LEASE_MS"),
                d.redis_epoch_lease.as_millis() as u64,
            )?),
            cache_ttl: Duration::from_secs(parse(
                "CACHE_TTL_SECONDS",
                get("CACHE_TTL_SECONDS"),
                d.cache_ttl.as_secs(),
            )?),
            log_format,
            max_body_bytes: parse("MAX_BODY_BYTES", get("MAX_BODY_BYTES"), d.max_body_bytes)?,
            compute_timeout: Duration::from_secs(parse(
                "COMPUTE_TIMEOUT_SECONDS",
                get("COMPUTE_TIMEOUT_SECONDS"),
                d.compute_timeout.as_secs(),
            )?),
            compute_max_rows: parse(
                "COMPUTE_MAX_ROWS",
                get("COMPUTE_MAX_ROWS"),
                d.compute_max_rows,
            )?,
            compute_memory_limit_mb: parse(
                "COMPUTE_MEMORY_LIMIT_MB",
                get("COMPUTE_MEMORY_LIMIT_MB"),
                d.compute_memory_limit_mb,
            )?,
            compute_threads: parse("COMPUTE_THREADS", get("COMPUTE_THREADS"), d.compute_threads)?,
            compute_workers: parse("COMPUTE_WORKERS", get("COMPUTE_WORKERS"), d.compute_workers)?,
            compute_queue_size: parse(
                "COMPUTE_QUEUE_SIZE",
                get("COMPUTE_QUEUE_SIZE"),
                d.compute_queue_size,
            )?,
            compute_max_result_mb: parse(
                "COMPUTE_MAX_RESULT_MB",
                get("COMPUTE_MAX_RESULT_MB"),
                d.compute_max_result_mb,
            )?,
            compute_worker_program: None,
            compute_scratch_dir: None,
            batch_snapshot_max_bytes: parse(
                "BATCH_SNAPSHOT_MAX_BYTES",
                get("BATCH_SNAPSHOT_MAX_BYTES"),
                d.batch_snapshot_max_bytes,
            )?,
            snapshot_cache_max_bytes: parse(
                "SNAPSHOT_CACHE_MAX_BYTES",
                get("SNAPSHOT_CACHE_MAX_BYTES"),
                d.snapshot_cache_max_bytes,
            )?,
            aggregation_max_held_events: parse(
                "AGGREGATION_MAX_HELD_EVENTS",
                get("AGGREGATION_MAX_HELD_EVENTS"),
                d.aggregation_max_held_events,
            )?,
            aggregation_pass_events: parse(
                "AGGREGATION_PASS_EVENTS",
                get("AGGREGATION_PASS_EVENTS"),
                d.aggregation_pass_events,
            )?,
            snapshot_retention: Duration::from_secs(
                parse(
                    "SNAPSHOT_RETENTION_DAYS",
                    get("SNAPSHOT_RETENTION_DAYS"),
                    d.snapshot_retention.as_secs() / 86_400,
                )? * 86_400,
            ),
            api_keys: ApiKeys::parse(&get("API_KEYS").unwrap_or_default()).map_err(ConfigError)?,
            cors_allowed_origins: parse_origins(&get("CORS_ALLOWED_ORIGINS").unwrap_or_default())?,
            allowed_hosts: parse_hosts(&get("ALLOWED_HOSTS").unwrap_or_default())?,
            refresh_scheduler: match get("REFRESH_SCHEDULER").as_deref().map(str::trim) {
                None | Some("") | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(ConfigError(format!(
                        "REFRESH_SCHEDULER={other:?}: expected on or off"
                    )))
                }
            },
            scheduler_lease: Duration::from_secs(parse(
                "SCHEDULER_LEASE_SECONDS",
                get("SCHEDULER_LEASE_SECONDS"),
                d.scheduler_lease.as_secs(),
            )?),
            stream_lease: Duration::from_secs(parse(
                "STREAM_LEASE_SECONDS",
                get("STREAM_LEASE_SECONDS"),
                d.stream_lease.as_secs(),
            )?),
            nats_auth: NatsAuth::from_env(
                get("NATS_TOKEN").filter(|v| !v.trim().is_empty()),
                get("NATS_USER").filter(|v| !v.trim().is_empty()),
                get("NATS_PASSWORD").filter(|v| !v.is_empty()),
            )?,
            nats_tls: NatsTls::from_env(&get)?,
            kafka_auth: KafkaAuth::from_env(&get)?,
            data_dir: get("DATA_DIR").filter(|v| !v.trim().is_empty()),
            storage_options: STORAGE_VARIABLES
                .iter()
                .filter_map(|(var, key)| {
                    get(var)
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| (key.to_string(), v.trim().to_string()))
                })
                .collect(),
            external_source_prefixes: get("EXTERNAL_SOURCE_PREFIXES")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            spark_connect_url: get("SPARK_CONNECT_URL")
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
            test_clock_skew_seconds: parse(
                "FEATURE_STORE_TEST_CLOCK_SKEW_SECONDS",
                get("FEATURE_STORE_TEST_CLOCK_SKEW_SECONDS"),
                0,
            )?,
        };
        for spec in config
            .data_dir
            .iter()
            .chain(&config.external_source_prefixes)
        {
            crate::offline::Location::parse(spec)
                .map_err(|e| ConfigError(format!("DATA_DIR or EXTERNAL_SOURCE_PREFIXES: {e}")))?;
        }
        if let Some(url) = &config.spark_connect_url {
            crate::spark::endpoint(url).map_err(ConfigError)?;
        }
        if config.scheduler_lease.is_zero() {
            return Err(ConfigError(
                "SCHEDULER_LEASE_SECONDS must be at least 1".into(),
            ));
        }
        if config.redis_epoch_lease > MAX_REDIS_EPOCH_LEASE {
            return Err(ConfigError(format!(
                "REDIS_EPOCH_LEASE_MS must be at most {}: every change waits that long before it returns",
                MAX_REDIS_EPOCH_LEASE.as_millis()
            )));
        }
        if config.cache_ttl.is_zero() {
            return Err(ConfigError("CACHE_TTL_SECONDS must be at least 1".into()));
        }
        if config.compute_timeout.is_zero() {
            return Err(ConfigError(
                "COMPUTE_TIMEOUT_SECONDS must be at least 1".into(),
            ));
        }
        for (name, value) in [
            (
                "COMPUTE_MEMORY_LIMIT_MB",
                config.compute_memory_limit_mb as usize,
            ),
            ("COMPUTE_THREADS", config.compute_threads),
            ("COMPUTE_WORKERS", config.compute_workers),
            ("COMPUTE_MAX_RESULT_MB", config.compute_max_result_mb),
            (
                "AGGREGATION_PASS_EVENTS",
                config.aggregation_pass_events as usize,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if config.compute_memory_limit_mb < MIN_WORKER_MEMORY_MB {
            return Err(ConfigError(format!(
                "COMPUTE_MEMORY_LIMIT_MB must be at least {MIN_WORKER_MEMORY_MB}: a worker needs that much to start"
            )));
        }
        Ok(config)
    }

    /// Where raw tables and snapshots live: `DATA_DIR`, or `data` beside the SQLite file
    /// (`./data` with Postgres or an in-memory SQLite).
    pub fn data_location(&self) -> Result<crate::offline::Location, ConfigError> {
        let spec = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => {
                let file = self
                    .database_url
                    .strip_prefix("sqlite://")
                    .or_else(|| self.database_url.strip_prefix("sqlite:"))
                    .map(|rest| rest.split('?').next().unwrap_or(rest))
                    .filter(|path| !path.is_empty() && !path.contains(":memory:"));
                match file.and_then(|f| std::path::Path::new(f).parent()) {
                    Some(dir) if !dir.as_os_str().is_empty() => {
                        dir.join("data").display().to_string()
                    }
                    _ => "data".to_string(),
                }
            }
        };
        crate::offline::Location::parse(&spec).map_err(|e| ConfigError(format!("DATA_DIR: {e}")))
    }

    /// How the compute workers run, from these settings.
    pub fn compute_pool(&self) -> Result<PoolSettings, ConfigError> {
        let program = match &self.compute_worker_program {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|e| {
                ConfigError(format!(
                    "cannot find this executable to start compute workers: {e}"
                ))
            })?,
        };
        Ok(PoolSettings {
            program,
            workers: self.compute_workers,
            queue: self.compute_queue_size,
            threads: self.compute_threads,
            memory_limit_mb: self.compute_memory_limit_mb,
            timeout: self.compute_timeout,
            max_result_bytes: self.compute_max_result_mb.saturating_mul(1024 * 1024),
            scratch: self
                .compute_scratch_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir),
        })
    }
}

/// Below this a worker cannot load the engine and its input at all.
const MIN_WORKER_MEMORY_MB: u64 = 64;

/// The longest `REDIS_EPOCH_LEASE_MS`: each change's answer waits a lease.
const MAX_REDIS_EPOCH_LEASE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlalchemy_sqlite_urls_are_accepted() {
        assert_eq!(
            normalize_database_url("sqlite:///./feature_store.db"),
            "sqlite://./feature_store.db"
        );
        assert_eq!(
            normalize_database_url("sqlite:////tmp/x.db"),
            "sqlite:///tmp/x.db"
        );
        assert_eq!(normalize_database_url("sqlite://./a.db"), "sqlite://./a.db");
    }

    #[test]
    fn debug_output_hides_passwords() {
        let c = Config {
            database_url: "postgres://user:secret@db/x".into(),
            ..Config::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn allowed_hosts_are_lowercased_and_ports_or_schemes_refused() {
        let c = Config::from_lookup(|k| {
            (k == "ALLOWED_HOSTS").then(|| "Features.Example.com., svc".into())
        })
        .unwrap();
        assert_eq!(c.allowed_hosts, ["features.example.com", "svc"]);
        for bad in ["http://x", "x:8000"] {
            let r = Config::from_lookup(|k| (k == "ALLOWED_HOSTS").then(|| bad.into()));
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_origins_are_normalised_and_paths_refused() {
        let c = Config::from_lookup(|k| {
            (k == "CORS_ALLOWED_ORIGINS")
                .then(|| "https://App.example.com/, http://localhost:3000".into())
        })
        .unwrap();
        assert_eq!(
            c.cors_allowed_origins,
            ["https://app.example.com", "http://localhost:3000"]
        );
        for bad in ["app.example.com", "https://a.example/x", "*"] {
            let r = Config::from_lookup(|k| (k == "CORS_ALLOWED_ORIGINS").then(|| bad.into()));
            assert!(r.is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn nats_credentials_come_in_pairs_and_are_never_shown() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = Config::from_lookup(env(&[("NATS_TOKEN", "s3cr3t-token")])).unwrap();
        assert_eq!(c.nats_auth, NatsAuth::Token("s3cr3t-token".into()));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let c = Config::from_lookup(env(&[("NATS_USER", "fs"), ("NATS_PASSWORD", "pw-s3cr3t")]))
            .unwrap();
        assert!(!format!("{c:?}").contains("pw-s3cr3t"));
        assert!(Config::from_lookup(env(&[("NATS_USER", "fs")])).is_err());
    }

    #[test]
    fn nats_tls_files_must_exist_and_a_certificate_comes_with_its_key() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let path = ca.path().to_str().unwrap().to_string();
        let c = Config::from_lookup(|k| (k == "NATS_TLS_CA_FILE").then(|| path.clone())).unwrap();
        assert_eq!(c.nats_tls.ca_file.as_deref(), Some(path.as_str()));
        assert!(c.nats_tls.is_set());
        assert!(!Config::from_lookup(|_| None).unwrap().nats_tls.is_set());
        let missing = Config::from_lookup(|k| {
            (k == "NATS_TLS_CA_FILE").then(|| "/nowhere/ca.pem".to_string())
        });
        assert!(missing.unwrap_err().to_string().contains("no such file"));
        let half = Config::from_lookup(|k| (k == "NATS_TLS_CERT_FILE").then(|| path.clone()));
        assert!(half.unwrap_err().to_string().contains("go together"));
    }

    #[test]
    fn kafka_security_is_checked_at_start_and_its_passwords_never_shown() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let ca_path = ca.path().to_str().unwrap().to_string();
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.clone())
            }
        };
        let c = Config::from_lookup(env(vec![
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".into()),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512".into()),
            ("KAFKA_SASL_USERNAME", "fs".into()),
            ("KAFKA_SASL_PASSWORD", "pw-s3cr3t".into()),
            ("KAFKA_SSL_CA_LOCATION", ca_path.clone()),
        ]))
        .unwrap();
        let settings = c.kafka_auth.settings();
        for expected in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "fs"),
            ("sasl.password", "pw-s3cr3t"),
            ("ssl.ca.location", ca_path.as_str()),
        ] {
            assert!(settings.contains(&expected), "{expected:?} in {settings:?}");
        }
        assert!(!format!("{c:?}").contains("pw-s3cr3t"));
        // Nothing set: plaintext, as before.
        let plain = Config::from_lookup(|_| None).unwrap().kafka_auth;
        assert_eq!(plain.settings(), [("security.protocol", "plaintext")]);

        let refused = |pairs: Vec<(&'static str, String)>, says: &str| {
            let e = Config::from_lookup(env(pairs)).unwrap_err().to_string();
            assert!(e.contains(says), "{e} should say {says}");
        };
        refused(
            vec![("KAFKA_SECURITY_PROTOCOL", "tls".into())],
            "expected plaintext, ssl",
        );
        refused(
            vec![("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext".into())],
            "set KAFKA_SASL_MECHANISM",
        );
        refused(
            vec![
                ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext".into()),
                ("KAFKA_SASL_MECHANISM", "GSSAPI".into()),
                ("KAFKA_SASL_USERNAME", "fs".into()),
                ("KAFKA_SASL_PASSWORD", "pw".into()),
            ],
            "KAFKA_SASL_MECHANISM=\"GSSAPI\"",
        );
        refused(
            vec![("KAFKA_SASL_PASSWORD", "pw".into())],
            "KAFKA_SASL_PASSWORD is set but KAFKA_SECURITY_PROTOCOL is plaintext",
        );
        refused(
            vec![("KAFKA_SSL_CA_LOCATION", ca_path.clone())],
            "use ssl or sasl_ssl",
        );
        refused(
            vec![
                ("KAFKA_SECURITY_PROTOCOL", "ssl".into()),
                ("KAFKA_SSL_CA_LOCATION", "/nowhere/ca.pem".into()),
            ],
            "no such file",
        );
        refused(
            vec![
                ("KAFKA_SECURITY_PROTOCOL", "ssl".into()),
                ("KAFKA_SSL_CERTIFICATE_LOCATION", ca_path),
            ],
            "go together",
        );
    }

    #[test]
    fn empty_redis_url_means_no_redis() {
        let c = Config::from_lookup(|k| (k == "REDIS_URL").then(|| " ".to_string())).unwrap();
        assert!(c.redis_url.is_none());
    }

    #[test]
    fn the_redis_epoch_lease_is_5_ms_unless_set_and_at_most_a_second() {
        let lease = |v: &str| {
            let v = v.to_string();
            Config::from_lookup(move |k| (k == "REDIS_EPOCH_LEASE_MS").then(|| v.clone()))
        };
        assert_eq!(
            Config::from_lookup(|_| None).unwrap().redis_epoch_lease,
            Duration::from_millis(5)
        );
        assert_eq!(lease("0").unwrap().redis_epoch_lease, Duration::ZERO);
        assert_eq!(
            lease("1000").unwrap().redis_epoch_lease,
            Duration::from_secs(1)
        );
        let too_long = lease("1001").unwrap_err().to_string();
        assert!(too_long.contains("at most 1000"), "{too_long}");
        assert!(lease("-1").is_err());
    }

    #[test]
    fn the_data_dir_defaults_to_data_beside_the_sqlite_file() {
        let c = Config::from_lookup(|k| {
            (k == "DATABASE_URL").then(|| "sqlite:/srv/fs/store.db".to_string())
        })
        .unwrap();
        assert_eq!(c.data_location().unwrap().uri(), "/srv/fs/data");
        let c = Config::from_lookup(|k| match k {
            "DATA_DIR" => Some("s3://bucket/fs".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("hidden-secret".to_string()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.data_location().unwrap().uri(), "s3://bucket/fs");
        assert!(!format!("{c:?}").contains("hidden-secret"));
        assert!(Config::from_lookup(|k| (k == "DATA_DIR").then(|| "ftp://x/y".into())).is_err());
    }

    #[test]
    fn bad_port_is_refused() {
        assert!(Config::from_lookup(|k| (k == "PORT").then(|| "eighty".to_string())).is_err());
    }
}
