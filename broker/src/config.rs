//! Broker configuration: defaults, overridden by a TOML file, then `STRATA_*` environment
//! variables, then command-line flags; validated before anything starts.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use serde::Deserialize;

/// Everything the broker can be told. TOML keys are the field names; environment variables
/// are `STRATA_` + the field name in upper case.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`host:port`). A host name is resolved and the first address
    /// used; it never turns into "all interfaces".
    pub listen: String,
    /// `host:port` clients are told to connect to (Metadata); defaults to `listen`.
    pub advertise: Option<String>,
    /// Named listeners, Kafka style: `NAME://host:port,NAME2://host:port`. When set, they
    /// replace `listen` / `advertise`: the broker accepts on each, and tells each client the
    /// address advertised for the listener it connected to (e.g. one for clients on the
    /// host, one for clients inside a Docker network).
    pub listeners: String,
    /// `NAME://host:port` per listener: the address clients of that listener are told;
    /// defaults to the address it binds (required when that is 0.0.0.0 or ::).
    pub advertised_listeners: String,
    /// Per listener, the source addresses it accepts: `NAME=CIDR,CIDR;NAME2=CIDR` (IPv4 and
    /// IPv6; a bare address is one host). A listener without an entry accepts any source;
    /// a connection from outside its list is closed before a byte is read. With `listen`
    /// alone, the listener is named PLAINTEXT.
    pub listener_allowlists: String,
    /// Each listener's security protocol, Kafka style: `NAME:PROTOCOL,...` with PLAINTEXT or
    /// SSL. A listener without an entry is SSL if it is named SSL, PLAINTEXT otherwise.
    pub listener_security_protocol_map: String,
    /// PEM file with the certificate chain SSL listeners present (leaf first).
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM file with the private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub ssl_key_location: Option<PathBuf>,
    /// PEM file with the CA certificates client certificates are checked against.
    pub ssl_truststore_location: Option<PathBuf>,
    /// Client certificates on SSL listeners: `none`, `requested` (checked when sent) or
    /// `required` (Kafka's `ssl.client.auth`). A client's certificate names its principal:
    /// `User:` and its subject, e.g. `User:CN=alice,O=example`.
    pub ssl_client_auth: String,
    /// How often the certificate, key and truststore files are checked for changes (they are
    /// also reloaded on SIGHUP); a change takes effect for new connections, and a file that
    /// does not load keeps the old one in use. 0: only on SIGHUP.
    pub ssl_reload_interval_ms: u64,
    /// SASL mechanisms SASL_PLAINTEXT and SASL_SSL listeners offer, separated by `,`:
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    pub sasl_enabled_mechanisms: String,
    /// The users SASL/PLAIN accepts: one `name:pbkdf2-sha256:ITERATIONS:SALT_HEX:HASH_HEX`
    /// line each (the password's PBKDF2-HMAC-SHA256; never the password itself).
    pub sasl_plain_users_file: Option<PathBuf>,
    /// Longest a SASL login lasts (Kafka's `connections.max.reauth.ms`, KIP-368): clients
    /// that support it log in again on the same connection before then; a connection that
    /// has not is closed at its next request. 0: a login lasts as long as its connection.
    pub connections_max_reauth_ms: u64,
    /// Most SCRAM credentials (user and mechanism pairs) the broker keeps;
    /// AlterUserScramCredentials beyond it is refused.
    pub max_scram_credentials: usize,
    /// Most ACL bindings the broker keeps; CreateAcls beyond it is refused (each is checked
    /// in memory on every authorization).
    pub max_acls: usize,
    /// How long a failed authentication waits before its answer, after which the connection
    /// closes (Kafka's `connection.failed.authentication.delay.ms`).
    pub connection_failed_authentication_delay_ms: u64,
    /// Where the log lives.
    pub data_dir: PathBuf,
    /// This broker's node id in Metadata responses.
    pub node_id: i32,
    /// Partitions of a topic created automatically or without an explicit count.
    pub num_partitions: i32,
    /// Create unknown topics when a client asks for their metadata.
    pub auto_create_topics: bool,
    /// fsync the write-ahead log before acknowledging `acks=all` and before data becomes
    /// visible to consumers.
    pub fsync: bool,
    /// Largest record batch accepted (Kafka's `message.max.bytes`); topics may override it
    /// with `max.message.bytes`.
    pub message_max_bytes: usize,
    /// Largest request frame (Kafka's `socket.request.max.bytes`); a larger one closes the
    /// connection.
    pub socket_request_max_bytes: usize,
    /// Connections served at once; further ones are closed with a log line.
    pub max_connections: usize,
    /// Default `segment.bytes` / `segment.ms` for topics that do not set them.
    pub segment_bytes: u64,
    pub segment_ms: i64,
    /// Default `retention.ms` (Kafka's `log.retention.ms`; -1 keeps data forever).
    pub retention_ms: i64,
    /// Default `retention.bytes` per partition (Kafka's `log.retention.bytes`; -1: no limit).
    pub retention_bytes: i64,
    /// Default `message.timestamp.type` (`CreateTime` or `LogAppendTime`).
    pub message_timestamp_type: String,
    /// How often retention runs (Kafka's `log.retention.check.interval.ms`).
    pub retention_check_interval_ms: u64,
    /// How long the first rebalance of an empty group waits for more members to join
    /// (Kafka's `group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// Session timeouts a consumer may ask for (`group.min/max.session.timeout.ms`).
    pub group_min_session_timeout_ms: u64,
    pub group_max_session_timeout_ms: u64,
    /// Committed offsets of groups without members expire after this long
    /// (`offsets.retention.minutes`).
    pub offsets_retention_minutes: u64,
    /// Memory for the newest batches (as appended) and recently read ones, shared by every
    /// fetch: consumers near the tail, and groups reading the same data, are served from
    /// memory without copies; 0 turns the cache off.
    pub fetch_cache_mb: usize,
    /// Most bytes one Fetch response carries, whatever the client asks for (Kafka's
    /// `fetch.max.bytes`); it caps both `max_bytes` and `partition_max_bytes`.
    pub fetch_max_bytes: usize,
    /// A connection that sends no request for this long is closed
    /// (Kafka's `connections.max.idle.ms`).
    pub connections_max_idle_ms: u64,
    /// Connections one IP address may hold at once (Kafka's `max.connections.per.ip`).
    pub max_connections_per_ip: usize,
    /// Per-address exceptions, `ip:count` separated by commas, e.g. `10.0.0.7:500,::1:50`
    /// (Kafka's `max.connections.per.ip.overrides`).
    pub max_connections_per_ip_overrides: String,
    /// Bytes of requests one connection may have read and not yet answered; the broker stops
    /// reading from it until answers go out (Kafka's `queued.max.request.bytes`, here per
    /// connection). A single request larger than this is still served, alone.
    pub queued_max_request_bytes: usize,
    /// Partitions the broker holds in all; CreateTopics and CreatePartitions that would go past
    /// it are refused with INVALID_PARTITIONS before anything is allocated.
    pub max_partitions: usize,
    /// Largest frame of any request but Produce. Those decode into structures up to ~40
    /// times their size on the wire (a 2-byte topic name becomes an 80-byte entry), while
    /// Produce's records stay as the bytes received; so they get a smaller limit than
    /// `socket_request_max_bytes`.
    pub non_produce_request_max_bytes: usize,
    /// Bytes of non-Produce requests being decoded and handled at once, over all
    /// connections; further ones wait their turn. Bounds what decoding can cost in all
    /// (about 40 times this, at worst).
    pub decoding_max_bytes: usize,
    /// Where sealed segments of topics with `remote.storage.enable=true` are archived:
    /// `file:///absolute/path` or `s3://bucket/prefix` (endpoint, region and credentials from
    /// the standard `AWS_*` environment variables); default `<data_dir>/archive`.
    pub archive_url: Option<String>,
    /// How often the archive connector looks for newly sealed segments.
    pub archive_interval_ms: u64,
    /// Whether a deleted topic's archive is deleted too (as Kafka's tiered storage does);
    /// `false` keeps it, for restores. DeleteTopics records the deleted topic (name and id)
    /// with the deletion when this is on, and the archive connector deletes exactly the
    /// recorded archives: archived topics this broker does not know (another broker's, or
    /// its own after the data dir was lost) are never deleted.
    pub archive_delete_with_topic: bool,
    /// Partitions the archive connector uploads at once (each streams one segment at a time,
    /// in bounded memory: at most about 40 MiB per upload).
    pub archive_max_concurrent_uploads: usize,
    /// The admin HTTP listener (`/metrics`, `/health`, `/ready`), host:port; empty: none.
    pub admin_listen: String,
    /// Whether `/metrics` has per-partition series (offsets, sizes, consumer lag per
    /// partition); off, only per-topic and per-group ones (bounded cardinality).
    pub metrics_partition_series: bool,
    /// Memory for tiered reads: cached archive indexes and read-ahead chunks (MiB).
    pub archive_read_cache_mb: usize,
    /// Tiered reads fetch a segment from the archive in ranged reads of about this many
    /// bytes (whole batches), one ahead of the consumer.
    pub archive_read_chunk_bytes: usize,
    /// An idempotent producer's state on a partition (its last sequences, for duplicate
    /// detection) is dropped once it has not written there for this long (Kafka's
    /// `producer.id.expiration.ms`); checked with every retention pass.
    pub producer_id_expiration_ms: i64,
    /// Whether the log cleaner compacts topics whose `cleanup.policy` includes `compact`
    /// (Kafka's `log.cleaner.enable`).
    pub log_cleaner_enable: bool,
    /// How long the cleaner sleeps when no partition needs cleaning (Kafka's
    /// `log.cleaner.backoff.ms`).
    pub log_cleaner_backoff_ms: u64,
    /// Memory for the cleaner's map of keys (Kafka's `log.cleaner.dedupe.buffer.size`): about
    /// 25 bytes a key, so the default dedupes ~1.2 million distinct keys per pass; a log
    /// with more takes several passes.
    pub log_cleaner_dedupe_buffer_size: u64,
    /// The cleaner's I/O (bytes read plus written) per second (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`); 0: unlimited.
    pub log_cleaner_io_max_bytes_per_second: u64,
    /// Principals allowed every operation whatever the ACLs say, separated by `;` or `,`
    /// (Kafka's `super.users`), e.g. `User:admin;User:ops`.
    pub super_users: String,
    /// Whether an operation on a resource no ACL applies to (for anyone) is allowed
    /// (Kafka's `allow.everyone.if.no.acl.found`). On by default, so a broker without ACLs
    /// serves everyone; off, only ACLs (and super users) grant anything.
    pub allow_everyone_if_no_acl_found: bool,
    /// Client quotas measure rates over this many samples (Kafka's `quota.window.num`)...
    pub quota_window_num: u32,
    /// ...of this many seconds each (Kafka's `quota.window.size.seconds`).
    pub quota_window_size_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:9092".into(),
            advertise: None,
            listeners: String::new(),
            advertised_listeners: String::new(),
            listener_allowlists: String::new(),
            listener_security_protocol_map: String::new(),
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_truststore_location: None,
            ssl_client_auth: "none".into(),
            ssl_reload_interval_ms: 10_000,
            sasl_enabled_mechanisms: "PLAIN".into(),
            sasl_plain_users_file: None,
            connections_max_reauth_ms: 0,
            // Far more users than a broker's operators manage by hand; each is a few
            // hundred bytes of memory and one key.
            max_scram_credentials: 10_000,
            // Far more than hand-managed ACLs reach; the authorizer's indexes keep checks
            // cheap well beyond it.
            max_acls: 100_000,
            connection_failed_authentication_delay_ms: 100,
            data_dir: PathBuf::from("./data"),
            node_id: 1,
            num_partitions: 1,
            auto_create_topics: true,
            fsync: true,
            message_max_bytes: strata_storage::DEFAULT_MAX_MESSAGE_BYTES,
            // Kafka's default socket.request.max.bytes: 100 MiB.
            socket_request_max_bytes: 100 * 1024 * 1024,
            // Enough for many clients; each connection costs a task and two buffers.
            max_connections: 10_000,
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            // Kafka's defaults: 7 days, no size limit, CreateTime, every 5 minutes.
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            message_timestamp_type: "CreateTime".into(),
            retention_check_interval_ms: 300_000,
            // Kafka's defaults: 3 s, 6 s .. 30 min, 7 days.
            group_initial_rebalance_delay_ms: 3000,
            group_min_session_timeout_ms: 6000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_retention_minutes: 7 * 24 * 60,
            // The storage's default (64 MiB): a window of the newest data for consumers near
            // the tail (a fraction of a second at full produce speed, minutes at a few
            // MB/s), within the broker's 512 MiB memory budget.
            fetch_cache_mb: strata_storage::StoreConfig::new("").read_cache_bytes >> 20,
            // Kafka's defaults: 55 MiB, 10 minutes, no per-address limit.
            fetch_max_bytes: 55 * 1024 * 1024,
            connections_max_idle_ms: 600_000,
            max_connections_per_ip: i32::MAX as usize,
            max_connections_per_ip_overrides: String::new(),
            // One largest request (socket_request_max_bytes) in flight per connection: a
            // producer's pipeline of 1 MiB batches never waits, while 32 read-ahead requests
            // of 100 MiB (3.2 GB) can no longer be queued on one connection.
            queued_max_request_bytes: 100 * 1024 * 1024,
            // Far beyond what one broker serves well (each partition keeps in-memory state
            // and RocksDB keys), far below what exhausts memory (~1 KiB each).
            max_partitions: 100_000,
            // Metadata for 100,000 topics, or a group assignment for thousands of members, is
            // a few MiB; 8 MiB decodes to at most ~320 MiB.
            non_produce_request_max_bytes: 8 * 1024 * 1024,
            // Four of the largest at once (~1.3 GB decoded at worst); ordinary traffic
            // (heartbeats, fetches, commits of a few hundred bytes each) never comes close.
            decoding_max_bytes: 32 * 1024 * 1024,
            archive_url: None,
            // Segments seal at segment.bytes / segment.ms (1 GiB / 7 days by default), so a
            // segment waits at most this long after sealing; a pass that finds nothing new
            // reads only metadata.
            archive_interval_ms: 10_000,
            archive_delete_with_topic: true,
            // Enough to keep a link to an object store busy (S3 serves each connection at
            // tens of MB/s) while bounding the connector's memory to ~128 MiB.
            archive_max_concurrent_uploads: 4,
            admin_listen: "127.0.0.1:9644".into(),
            metrics_partition_series: true,
            // Sixteen chunks: a few consumers replaying at once each have theirs, and the next.
            archive_read_cache_mb: 64,
            archive_read_chunk_bytes: 4 * 1024 * 1024,
            // Kafka's default: 1 day.
            producer_id_expiration_ms: strata_storage::DEFAULT_PRODUCER_ID_EXPIRATION_MS,
            // Kafka's defaults: on, 15 s between looks.
            log_cleaner_enable: true,
            log_cleaner_backoff_ms: 15_000,
            // 32 MiB (Kafka's is 128 MiB): within the broker's 512 MiB memory budget next to
            // the memtables and caches, and ~1.2 million keys per pass.
            log_cleaner_dedupe_buffer_size: 32 << 20,
            log_cleaner_io_max_bytes_per_second: 0,
            super_users: String::new(),
            // Unlike Kafka (false once an authorizer is configured): a broker with no ACLs
            // keeps serving everyone, as it did before ACLs existed.
            allow_everyone_if_no_acl_found: true,
            // Kafka's defaults: 11 samples of 1 s, so rates are averaged over ~10 s and a
            // client may burst ~10 s worth of its quota before it is throttled.
            quota_window_num: 11,
            quota_window_size_seconds: 1,
        }
    }
}

/// The SASL mechanisms the broker implements.
pub const SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Applies `STRATA_<NAME>` from `lookup` to each field.
macro_rules! env_overrides {
    ($cfg:ident, $lookup:ident, { $($field:ident),* $(,)? }) => {
        $(
            let name = concat!("STRATA_", stringify!($field)).to_uppercase();
            if let Some(v) = $lookup(&name) {
                $cfg.$field = parse_env(&name, &v)?;
            }
        )*
    };
}

trait FromEnv: Sized {
    fn from_env(s: &str) -> Option<Self>;
}
macro_rules! from_env_via_parse {
    ($($t:ty),*) => { $(impl FromEnv for $t { fn from_env(s: &str) -> Option<Self> { s.trim().parse().ok() } })* };
}
from_env_via_parse!(i32, i64, u32, u64, usize, String, PathBuf);
impl FromEnv for Option<PathBuf> {
    fn from_env(s: &str) -> Option<Self> {
        Some(Some(PathBuf::from(s)).filter(|p| !p.as_os_str().is_empty()))
    }
}
impl FromEnv for bool {
    fn from_env(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => None,
        }
    }
}
impl FromEnv for Option<String> {
    fn from_env(s: &str) -> Option<Self> {
        Some(Some(s.to_string()).filter(|s| !s.is_empty()))
    }
}

fn parse_env<T: FromEnv>(name: &str, value: &str) -> Result<T, ConfigError> {
    T::from_env(value).ok_or_else(|| bad(format!("{name}={value:?} cannot be parsed")))
}

impl Config {
    /// Reads the TOML file `path`, if any, over the defaults.
    pub fn from_file(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| bad(format!("{}: {e}", path.display())))
    }

    /// Applies `STRATA_*` variables found by `lookup` (normally `std::env::var`).
    pub fn apply_env(
        mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        env_overrides!(self, lookup, {
            listen, advertise, data_dir, node_id, num_partitions, auto_create_topics, fsync,
            message_max_bytes, socket_request_max_bytes, max_connections, segment_bytes,
            segment_ms, retention_ms, retention_bytes, message_timestamp_type,
            retention_check_interval_ms, group_initial_rebalance_delay_ms, group_min_session_timeout_ms,
            group_max_session_timeout_ms, offsets_retention_minutes, fetch_cache_mb,
            fetch_max_bytes, connections_max_idle_ms, max_connections_per_ip,
            max_connections_per_ip_overrides, queued_max_request_bytes, max_partitions,
            non_produce_request_max_bytes, decoding_max_bytes, archive_url, archive_interval_ms,
            archive_delete_with_topic, archive_max_concurrent_uploads, archive_read_cache_mb, archive_read_chunk_bytes,
            admin_listen, metrics_partition_series, listeners, advertised_listeners,
            listener_allowlists, listener_security_protocol_map, ssl_certificate_location,
            ssl_key_location, ssl_truststore_location, ssl_client_auth, ssl_reload_interval_ms,
            sasl_enabled_mechanisms, sasl_plain_users_file,
            connection_failed_authentication_delay_ms,
        });
        env_overrides!(self, lookup, {
            producer_id_expiration_ms, super_users, allow_everyone_if_no_acl_found,
            connections_max_reauth_ms, max_scram_credentials, max_acls,
        });
        env_overrides!(self, lookup, {
            log_cleaner_enable, log_cleaner_backoff_ms, log_cleaner_dedupe_buffer_size,
            log_cleaner_io_max_bytes_per_second,
        });
        env_overrides!(self, lookup, { quota_window_num, quota_window_size_seconds });
        Ok(self)
    }

    /// Checks every value and resolves the (first) listen address.
    pub fn validate(&self) -> Result<SocketAddr, ConfigError> {
        let listeners = self.listener_specs()?;
        let listen = listeners[0].bind;
        if self.num_partitions < 1 {
            return Err(bad("num_partitions must be at least 1"));
        }
        if self.message_max_bytes == 0 || self.message_max_bytes > i32::MAX as usize {
            return Err(bad("message_max_bytes must be between 1 and 2147483647"));
        }
        if self.socket_request_max_bytes < self.message_max_bytes {
            return Err(bad(format!(
                "socket_request_max_bytes ({}) must be at least message_max_bytes ({})",
                self.socket_request_max_bytes, self.message_max_bytes
            )));
        }
        if self.max_connections == 0 {
            return Err(bad("max_connections must be at least 1"));
        }
        if self.segment_bytes < 1024 || self.segment_ms < 1 {
            return Err(bad("segment_bytes must be >= 1024 and segment_ms >= 1"));
        }
        if self.retention_ms < -1 || self.retention_bytes < -1 {
            return Err(bad(
                "retention_ms and retention_bytes must be -1 (unlimited) or more",
            ));
        }
        if !matches!(
            self.message_timestamp_type.as_str(),
            "CreateTime" | "LogAppendTime"
        ) {
            return Err(bad(
                "message_timestamp_type must be CreateTime or LogAppendTime",
            ));
        }
        if self.retention_check_interval_ms == 0 {
            return Err(bad("retention_check_interval_ms must be at least 1"));
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err(bad(
                "group_min_session_timeout_ms must not exceed group_max_session_timeout_ms",
            ));
        }
        if self.offsets_retention_minutes == 0 {
            return Err(bad("offsets_retention_minutes must be at least 1"));
        }
        if self.fetch_max_bytes == 0 || self.fetch_max_bytes > i32::MAX as usize {
            return Err(bad("fetch_max_bytes must be between 1 and 2147483647"));
        }
        if self.connections_max_idle_ms == 0 {
            return Err(bad("connections_max_idle_ms must be at least 1"));
        }
        if self.max_connections_per_ip == 0 || self.queued_max_request_bytes == 0 {
            return Err(bad(
                "max_connections_per_ip and queued_max_request_bytes must be at least 1",
            ));
        }
        if self.archive_interval_ms == 0 {
            return Err(bad("archive_interval_ms must be at least 1"));
        }
        if self.archive_read_cache_mb == 0
            || self.archive_read_chunk_bytes < 4096
            || self.archive_read_chunk_bytes > 1 << 30
        {
            return Err(bad(
                "archive_read_cache_mb must be at least 1 and archive_read_chunk_bytes between 4096 and 1073741824",
            ));
        }
        if let Some(url) = &self.archive_url {
            strata_storage::archive::Location::parse(url).map_err(|e| match e {
                strata_storage::StorageError::InvalidRequest(why) => bad(why),
                e => bad(e.to_string()),
            })?;
        }
        if self.archive_max_concurrent_uploads == 0 {
            return Err(bad("archive_max_concurrent_uploads must be at least 1"));
        }
        if self.non_produce_request_max_bytes == 0 || self.decoding_max_bytes == 0 {
            return Err(bad(
                "non_produce_request_max_bytes and decoding_max_bytes must be at least 1",
            ));
        }
        if self.max_partitions == 0 || self.max_partitions > i32::MAX as usize {
            return Err(bad("max_partitions must be between 1 and 2147483647"));
        }
        self.connection_limits()?;
        if self.producer_id_expiration_ms < 1 {
            return Err(bad("producer_id_expiration_ms must be at least 1"));
        }
        if self.log_cleaner_backoff_ms == 0 {
            return Err(bad("log_cleaner_backoff_ms must be at least 1"));
        }
        // Kafka's lower bound: a map smaller than this holds too few keys to make progress
        // on any real log.
        if self.log_cleaner_dedupe_buffer_size < 1 << 20 {
            return Err(bad(
                "log_cleaner_dedupe_buffer_size must be at least 1048576",
            ));
        }
        // At least two samples (one filling, one full); at most an hour of samples and of
        // seconds each (a rate over days would hardly move).
        if !(2..=3600).contains(&self.quota_window_num)
            || !(1..=3600).contains(&self.quota_window_size_seconds)
        {
            return Err(bad(
                "quota_window_num must be between 2 and 3600 and quota_window_size_seconds between 1 and 3600",
            ));
        }
        for p in crate::acl::parse_principals(&self.super_users) {
            if !p
                .split_once(':')
                .is_some_and(|(k, n)| !k.is_empty() && !n.is_empty())
            {
                return Err(bad(format!(
                    "super_users: {p:?} is not a principal (Type:name, e.g. User:admin)"
                )));
            }
        }
        Ok(listen)
    }

    /// The per-address connection limits: the default and the overrides, parsed.
    pub fn connection_limits(&self) -> Result<ConnectionLimits, ConfigError> {
        let mut overrides = std::collections::HashMap::new();
        for item in self
            .max_connections_per_ip_overrides
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let parsed = item.rsplit_once(':').and_then(|(ip, n)| {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                Some((ip.parse::<IpAddr>().ok()?, n.parse::<usize>().ok()?))
            });
            let (ip, n) = parsed.ok_or_else(|| {
                bad(format!(
                    "max_connections_per_ip_overrides: {item:?} is not ip:count"
                ))
            })?;
            overrides.insert(ip, n);
        }
        Ok(ConnectionLimits {
            per_ip: self.max_connections_per_ip,
            overrides,
        })
    }

    /// The archive's URL: `archive_url`, or `<data_dir>/archive` (made absolute).
    pub fn archive_location(&self) -> String {
        self.archive_url.clone().unwrap_or_else(|| {
            let dir = self.data_dir.join("archive");
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            format!("file://{}", dir.display())
        })
    }

    /// The group coordinator's settings.
    pub fn group_settings(&self) -> crate::group::GroupSettings {
        use std::time::Duration;
        crate::group::GroupSettings {
            initial_rebalance_delay: Duration::from_millis(self.group_initial_rebalance_delay_ms),
            min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
            max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
        }
    }

    /// `ssl_client_auth` checked.
    /// `sasl_enabled_mechanisms` as a list, in its order, blanks dropped.
    pub fn sasl_mechanisms(&self) -> Vec<String> {
        self.sasl_enabled_mechanisms
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn client_auth(&self) -> Result<ClientAuth, ConfigError> {
        match self.ssl_client_auth.trim().to_ascii_lowercase().as_str() {
            "none" | "" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => {
                if self.ssl_truststore_location.is_none() {
                    return Err(bad(
                        "ssl_client_auth=required needs ssl_truststore_location",
                    ));
                }
                Ok(ClientAuth::Required)
            }
            other => Err(bad(format!(
                "ssl_client_auth must be none, requested or required, not {other:?}"
            ))),
        }
    }

    /// The listeners: `listeners` / `advertised_listeners` when set, else one named
    /// PLAINTEXT from `listen` / `advertise`.
    pub fn listener_specs(&self) -> Result<Vec<ListenerSpec>, ConfigError> {
        let mut specs = Vec::new();
        if self.listeners.trim().is_empty() {
            specs.push(ListenerSpec {
                name: "PLAINTEXT".into(),
                bind: resolve(&self.listen)?,
                advertise: self.advertise.as_deref().map(split_host_port).transpose()?,
                allow: None,
                protocol: SecurityProtocol::Plaintext,
            });
        } else {
            for (name, addr) in named_list("listeners", &self.listeners)? {
                if specs.iter().any(|s: &ListenerSpec| s.name == name) {
                    return Err(bad(format!("listeners: {name} is named twice")));
                }
                specs.push(ListenerSpec {
                    name,
                    bind: resolve(&addr)?,
                    advertise: None,
                    allow: None,
                    protocol: SecurityProtocol::Plaintext,
                });
            }
            for (name, addr) in named_list("advertised_listeners", &self.advertised_listeners)? {
                let spec = specs.iter_mut().find(|s| s.name == name).ok_or_else(|| {
                    bad(format!(
                        "advertised_listeners names {name}, which is not in listeners"
                    ))
                })?;
                spec.advertise = Some(split_host_port(&addr)?);
            }
        }
        for entry in self
            .listener_allowlists
            .split(';')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (name, cidrs) = entry.split_once('=').ok_or_else(|| {
                bad(format!(
                    "listener_allowlists: {entry:?} is not NAME=CIDR,CIDR"
                ))
            })?;
            let name = name.trim().to_ascii_uppercase();
            let spec = specs.iter_mut().find(|s| s.name == name).ok_or_else(|| {
                bad(format!(
                    "listener_allowlists names {name}, which is not a listener"
                ))
            })?;
            let list = cidrs
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| {
                    Cidr::parse(c).ok_or_else(|| {
                        bad(format!(
                            "listener_allowlists: {c:?} is not an address or CIDR"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            spec.allow = Some(list);
        }
        let mut mapped = std::collections::HashMap::new();
        for entry in self
            .listener_security_protocol_map
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let (name, protocol) = entry.split_once(':').ok_or_else(|| {
                bad(format!(
                    "listener_security_protocol_map: {entry:?} is not NAME:PROTOCOL"
                ))
            })?;
            let name = name.trim().to_ascii_uppercase();
            if !specs.iter().any(|s| s.name == name) {
                return Err(bad(format!(
                    "listener_security_protocol_map names {name}, which is not a listener"
                )));
            }
            mapped.insert(name, SecurityProtocol::parse(protocol)?);
        }
        for s in specs.iter_mut() {
            s.protocol = match mapped.get(&s.name) {
                Some(p) => *p,
                // Named after a protocol: that one; any other name: PLAINTEXT.
                None if s.name == "SSL" => SecurityProtocol::Ssl,
                None if s.name.starts_with("SASL_") => SecurityProtocol::parse(&s.name)?,
                None => SecurityProtocol::Plaintext,
            };
        }
        if specs.iter().any(|s| s.protocol.sasl()) {
            let mechanisms = self.sasl_mechanisms();
            if mechanisms.is_empty() {
                return Err(bad("a SASL listener needs sasl_enabled_mechanisms"));
            }
            for m in &mechanisms {
                if !SASL_MECHANISMS.contains(&m.as_str()) {
                    return Err(bad(format!(
                        "sasl_enabled_mechanisms: {m:?} is not available ({})",
                        SASL_MECHANISMS.join(", ")
                    )));
                }
            }
            if mechanisms.iter().any(|m| m == "PLAIN") && self.sasl_plain_users_file.is_none() {
                return Err(bad("SASL/PLAIN needs sasl_plain_users_file"));
            }
        }
        if specs.iter().any(|s| s.protocol.tls())
            && (self.ssl_certificate_location.is_none() || self.ssl_key_location.is_none())
        {
            return Err(bad(
                "an SSL listener needs ssl_certificate_location and ssl_key_location",
            ));
        }
        self.client_auth()?;
        for s in &specs {
            if s.advertise.is_none() && s.bind.ip().is_unspecified() {
                return Err(bad(format!(
                    "listener {} ({}) accepts on every interface; advertise the host:port its clients should use (advertise, or advertised_listeners)",
                    s.name, s.bind
                )));
            }
        }
        Ok(specs)
    }
}

/// One listener: its name, where it binds, what it advertises (`None`: the bound address),
/// and the sources it accepts (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub bind: SocketAddr,
    pub advertise: Option<(String, u16)>,
    pub allow: Option<Vec<Cidr>>,
    pub protocol: SecurityProtocol,
}

/// Client certificates on SSL listeners (`ssl_client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

/// How a listener's connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// Its connections speak TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Its connections authenticate with SASL before anything else.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl SecurityProtocol {
    fn parse(s: &str) -> Result<SecurityProtocol, ConfigError> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            other => Err(bad(format!(
                "unknown security protocol {other:?} (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
            ))),
        }
    }
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `addr/prefix` or a bare address; `None` when malformed (prefix past 32 or 128
    /// included).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(Cidr { net, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let ((net, width), (addr, addr_width)) = (bits(self.net), bits(ip));
        if width != addr_width {
            return false;
        }
        let shift = width - u32::from(self.prefix);
        // A /0 matches everything of its family (a shift by the full width would overflow).
        shift >= width || (net >> shift) == (addr >> shift)
    }
}

impl ListenerSpec {
    /// The host and port advertised to clients, given the address actually bound.
    pub fn advertised(&self, bound: SocketAddr) -> (String, i32) {
        match &self.advertise {
            Some((h, p)) => (h.clone(), i32::from(*p)),
            None => (bound.ip().to_string(), i32::from(bound.port())),
        }
    }
}

/// Parses `NAME://host:port,...` (names: letters, digits, `_`, `-`).
fn named_list(what: &str, s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|item| {
            let (name, addr) = item
                .split_once("://")
                .ok_or_else(|| bad(format!("{what}: {item:?} is not NAME://host:port")))?;
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(bad(format!("{what}: {name:?} is not a listener name")));
            }
            split_host_port(addr)?;
            Ok((name.to_ascii_uppercase(), addr.to_string()))
        })
        .collect()
}

/// How many connections each address may hold.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLimits {
    pub per_ip: usize,
    pub overrides: std::collections::HashMap<IpAddr, usize>,
}

impl ConnectionLimits {
    pub fn limit(&self, ip: IpAddr) -> usize {
        self.overrides.get(&ip).copied().unwrap_or(self.per_ip)
    }
}

fn split_host_port(s: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("{s:?} is not host:port")))?;
    let port = port
        .parse()
        .map_err(|_| bad(format!("{s:?} has an invalid port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad(format!("{s:?} has no host")));
    }
    Ok((host.to_string(), port))
}

fn resolve(s: &str) -> Result<SocketAddr, ConfigError> {
    split_host_port(s)?;
    s.to_socket_addrs()
        .map_err(|e| bad(format!("cannot resolve listen address {s:?}: {e}")))?
        .next()
        .ok_or_else(|| bad(format!("listen address {s:?} resolves to nothing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_defaults() {
        let env = |k: &str| match k {
            "STRATA_FSYNC" => Some("false".to_string()),
            "STRATA_NUM_PARTITIONS" => Some("3".to_string()),
            _ => None,
        };
        let c = Config::default().apply_env(env).unwrap();
        assert!(!c.fsync);
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.listen, "127.0.0.1:9092");
    }

    #[test]
    fn bad_values_are_named() {
        let env = |k: &str| (k == "STRATA_FSYNC").then(|| "maybe".to_string());
        let e = Config::default().apply_env(env).unwrap_err();
        assert!(e.to_string().contains("STRATA_FSYNC"));
        let c = Config {
            num_partitions: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn toml_uses_field_names_and_rejects_unknown_keys() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:9999\"\nfsync = false").unwrap();
        assert_eq!((c.listen.as_str(), c.fsync), ("127.0.0.1:9999", false));
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }

    #[test]
    fn localhost_resolves_to_loopback_not_every_interface() {
        let c = Config {
            listen: "localhost:0".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap().ip().is_loopback());
        let c = Config {
            listen: "0.0.0.0:9092".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn archive_urls_are_directories_or_s3_buckets() {
        let with = |url: &str| Config {
            archive_url: Some(url.to_string()),
            ..Config::default()
        };
        for ok in [
            "file:///var/strata",
            "s3://bucket",
            "s3://my-bucket/some/prefix/",
        ] {
            assert!(with(ok).validate().is_ok(), "{ok}");
        }
        for bad in [
            "file://relative",
            "s3://",
            "s3:///prefix",
            "s3://Bad_Bucket/x",
            "http://x/y",
        ] {
            let e = with(bad).validate().unwrap_err().to_string();
            assert!(e.contains("archive URL"), "{bad}: {e}");
        }
        let c = Config {
            archive_max_concurrent_uploads: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn named_listeners_each_advertise_their_own_address() {
        let c = Config {
            listeners: "HOST://0.0.0.0:9092, internal://127.0.0.1:29092".into(),
            advertised_listeners: "HOST://localhost:9092,INTERNAL://strata:29092".into(),
            ..Config::default()
        };
        let specs = c.listener_specs().unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[1].name, "INTERNAL");
        let bound = "127.0.0.1:29092".parse().unwrap();
        assert_eq!(specs[1].advertised(bound), ("strata".to_string(), 29092));
        assert_eq!(c.validate().unwrap().port(), 9092);
        // Hostile or careless values are refused with the reason.
        for (listeners, advertised, why) in [
            ("HOST://0.0.0.0:9092", "", "every interface"),
            ("A://127.0.0.1:1,A://127.0.0.1:2", "", "twice"),
            ("127.0.0.1:9092", "", "NAME://"),
            ("A://127.0.0.1:1", "B://x:1", "not in listeners"),
            ("A B://127.0.0.1:1", "", "listener name"),
            ("A://127.0.0.1:99999", "", "port"),
        ] {
            let c = Config {
                listeners: listeners.into(),
                advertised_listeners: advertised.into(),
                ..Config::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{listeners} / {advertised}: {e}");
        }
    }

    #[test]
    fn allowlists_parse_and_match_both_families() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c("10.0.0.0/8").contains(ip("10.200.3.4")));
        assert!(!c("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(c("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!c("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(c("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!c("0.0.0.0/0").contains(ip("::1")), "families do not mix");
        assert!(c("::/0").contains(ip("2001:db8::1")));
        assert!(c("fd00::/8").contains(ip("fd12::1")));
        assert!(
            c("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped"
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "nope",
            "10.0.0.0/",
            "",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
        let cfg = Config {
            listeners: "A://127.0.0.1:1,B://127.0.0.1:2".into(),
            listener_allowlists: "a=127.0.0.1/32, ::1 ; B=10.0.0.0/8".into(),
            ..Config::default()
        };
        let specs = cfg.listener_specs().unwrap();
        assert_eq!(specs[0].allow.as_ref().map(Vec::len), Some(2));
        assert_eq!(specs[1].allow.as_ref().map(Vec::len), Some(1));
        for (lists, why) in [
            ("C=10.0.0.0/8", "not a listener"),
            ("A", "NAME=CIDR"),
            ("A=300.0.0.1", "not an address"),
        ] {
            let cfg = Config {
                listeners: "A://127.0.0.1:1".into(),
                listener_allowlists: lists.into(),
                ..Config::default()
            };
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{lists}: {e}");
        }
    }
}
