//! One Kafka API per file; [`dispatch`] is a flat match with one line per API.

pub mod alter_client_quotas;
pub mod alter_configs;
pub mod alter_partition_reassignments;
pub mod alter_user_scram_credentials;
pub mod api_versions;
pub mod config_changes;
pub mod create_acls;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_acls;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_acls;
pub mod describe_client_quotas;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_user_scram_credentials;
pub mod elect_leaders;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_partition_reassignments;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;

use std::sync::Arc;

use futures::future::BoxFuture;
use kafka_protocol::messages::{RequestHeader, RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use strata_storage::{StorageError, Store};

use crate::config::Config;
use crate::group::Coordinator;
use crate::protocol::RecordRef;

/// What every handler can reach.
pub struct Ctx {
    pub config: Config,
    pub store: Store,
    pub groups: Arc<Coordinator>,
    /// Wakes the retention task early (after DeleteRecords, to reclaim space promptly).
    pub retention: tokio::sync::Notify,
    pub cluster_id: String,
    /// Bytes of non-Produce requests being decoded and handled (`decoding_max_bytes`).
    pub decoding: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the broker shuts down: requests that wait (long polls) answer with
    /// what they have instead of holding the shutdown up to their `max_wait_ms`.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Per (topic id, partition) of archived topics: the offset after the last one archived,
    /// as the archive connector last saw it. Retention drops nothing of such a topic beyond it.
    pub archived: std::sync::Mutex<std::collections::HashMap<(uuid::Uuid, i32), i64>>,
    /// The archive tier (`archive_url`).
    pub archive: strata_storage::archive::Archive,
    /// Tiered reads of the archive, through its caches.
    pub tier: Arc<crate::tier::Tier>,
    /// What `/metrics` reads besides the recorder.
    pub counters: crate::metrics::Counters,
    /// The archive connector's counters.
    pub archive_stats: crate::archive_upload::ArchiveStats,
    /// The ACLs and the authorizer's settings.
    pub acls: crate::acl::Acls,
    /// The users SASL/PLAIN accepts (`sasl_plain_users_file`), when a listener uses SASL.
    pub plain_users: Option<Arc<crate::sasl::PlainUsers>>,
    /// Client quotas and per-partition caps, and what clients used of them.
    pub quotas: crate::quota::Quotas,
    /// The SCRAM credentials (AlterUserScramCredentials keeps them).
    pub scram: crate::scram::ScramUsers,
    /// Rate limit of the log lines peers cause (refused, failed, malformed connections).
    pub noisy: crate::ratelog::RateLog,
}

/// Who may do what: the ACLs and the SCRAM users, both loaded from the store.
pub struct Access {
    pub acls: crate::acl::Acls,
    pub scram: crate::scram::ScramUsers,
}

impl Ctx {
    pub fn new(
        config: Config,
        store: Store,
        groups: Arc<Coordinator>,
        cluster_id: String,
        shutdown: tokio_util::sync::CancellationToken,
        archive: strata_storage::archive::Archive,
        access: Access,
    ) -> Self {
        let Access { acls, scram } = access;
        let decoding = Arc::new(tokio::sync::Semaphore::new(
            config.decoding_max_bytes.min(u32::MAX as usize),
        ));
        let tier = Arc::new(crate::tier::Tier::new(
            archive.clone(),
            config.archive_read_cache_mb.saturating_mul(1 << 20),
            config.archive_read_chunk_bytes,
        ));
        Ctx {
            decoding,
            shutdown,
            archived: Default::default(),
            archive,
            tier,
            counters: Default::default(),
            archive_stats: Default::default(),
            acls,
            plain_users: None,
            scram,
            noisy: Default::default(),
            quotas: crate::quota::Quotas::new(
                Vec::new(),
                crate::quota::rate::Windows::from_config(&config),
            ),
            config,
            store,
            groups,
            retention: tokio::sync::Notify::new(),
            cluster_id,
        }
    }

    /// Partitions in all topics.
    pub fn partition_count(&self) -> u64 {
        self.store
            .topics()
            .iter()
            .map(|t| t.partitions.max(0) as u64)
            .sum()
    }

    pub fn retention_nudge(&self) {
        self.retention.notify_one();
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Runs blocking storage work off the async threads.
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
    {
        let ctx = self.clone();
        tokio::task::spawn_blocking(move || f(&ctx.store))
            .await
            .unwrap_or_else(|e| Err(StorageError::Io(format!("storage task failed: {e}"))))
    }
}

/// The listener a connection came in on: Metadata, FindCoordinator and DescribeCluster
/// tell its clients the address advertised for it.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Connections authenticate with SASL first (SASL_PLAINTEXT, SASL_SSL).
    pub sasl: bool,
}

/// Who is on the other end of a connection: what handlers authorize against and answer for.
#[derive(Debug)]
pub struct Session {
    pub peer: std::net::SocketAddr,
    pub listener: Arc<Listener>,
    /// `User:ANONYMOUS` until authentication says otherwise (Kafka's principal syntax).
    pub principal: String,
    /// On SASL listeners: how far authentication has come.
    pub sasl: Option<crate::sasl::SaslState>,
    /// The latest request's client id and the connection's mute (quotas).
    pub quota: crate::quota::SessionQuota,
}

impl Session {
    pub const ANONYMOUS: &'static str = "User:ANONYMOUS";

    pub fn anonymous(peer: std::net::SocketAddr, listener: Arc<Listener>) -> Session {
        Session {
            peer,
            sasl: listener.sasl.then(crate::sasl::SaslState::default),
            listener,
            principal: Session::ANONYMOUS.to_string(),
            quota: Default::default(),
        }
    }
}

/// A response body and the record sets it sends by reference (Fetch).
pub struct Response {
    pub body: ResponseKind,
    /// In the order the body holds their placeholders.
    pub records: Vec<RecordRef>,
}

impl<T: Into<ResponseKind>> From<T> for Response {
    fn from(r: T) -> Self {
        Response {
            body: r.into(),
            records: Vec::new(),
        }
    }
}

/// A handler's answer.
pub enum Reply {
    /// Send this now (after earlier answers on the connection).
    Now(Box<Response>),
    /// The answer is ready when this future resolves.
    Later(BoxFuture<'static, Response>),
    /// No answer at all (produce with acks=0).
    None,
    /// Close the connection without an answer.
    Close(String),
}

impl<T: Into<ResponseKind>> From<T> for Reply {
    fn from(r: T) -> Self {
        Reply::Now(Box::new(Response::from(r)))
    }
}

/// Routes a decoded request to its handler. Only supported APIs reach this point (the
/// version check in `protocol::decode` turns the others away).
pub async fn dispatch(
    ctx: &Arc<Ctx>,
    session: &Session,
    header: &RequestHeader,
    request: RequestKind,
    frame_len: usize,
) -> Reply {
    let v = header.request_api_version;
    match request {
        RequestKind::ApiVersions(r) => api_versions::handle(ctx, header, r).into(),
        RequestKind::Metadata(r) => metadata::handle(ctx, session, v, r).await.into(),
        RequestKind::Produce(r) => produce::handle(ctx, session, v, r, frame_len).await,
        RequestKind::Fetch(r) => fetch::handle(ctx, session, v, r).await,
        RequestKind::ListOffsets(r) => list_offsets::handle(ctx, session, v, r).await.into(),
        RequestKind::CreateTopics(r) => create_topics::handle(ctx, session, v, r).await.into(),
        RequestKind::DeleteTopics(r) => delete_topics::handle(ctx, session, v, r).await.into(),
        RequestKind::CreatePartitions(r) => {
            create_partitions::handle(ctx, session, v, r).await.into()
        }
        RequestKind::DescribeCluster(r) => describe_cluster::handle(ctx, session, r).into(),
        RequestKind::InitProducerId(r) => init_producer_id::handle(ctx, session, r).await.into(),
        RequestKind::FindCoordinator(r) => find_coordinator::handle(ctx, session, v, r).into(),
        RequestKind::JoinGroup(r) => join_group::handle(ctx, session, header, r).await,
        RequestKind::SyncGroup(r) => sync_group::handle(ctx, session, r).await,
        RequestKind::Heartbeat(r) => heartbeat::handle(ctx, session, r).await.into(),
        RequestKind::LeaveGroup(r) => leave_group::handle(ctx, session, v, r).await.into(),
        RequestKind::OffsetCommit(r) => offset_commit::handle(ctx, session, r).await.into(),
        RequestKind::OffsetFetch(r) => offset_fetch::handle(ctx, session, v, r).await.into(),
        RequestKind::DescribeGroups(r) => describe_groups::handle(ctx, session, v, r).await.into(),
        RequestKind::ListGroups(r) => list_groups::handle(ctx, session, r).await.into(),
        RequestKind::DeleteGroups(r) => delete_groups::handle(ctx, session, r).await.into(),
        RequestKind::OffsetDelete(r) => offset_delete::handle(ctx, session, r).await.into(),
        RequestKind::DescribeConfigs(r) => describe_configs::handle(ctx, session, v, r).into(),
        RequestKind::AlterConfigs(r) => alter_configs::handle(ctx, session, r).await.into(),
        RequestKind::IncrementalAlterConfigs(r) => {
            incremental_alter_configs::handle(ctx, session, r)
                .await
                .into()
        }
        RequestKind::DeleteRecords(r) => delete_records::handle(ctx, session, r).await.into(),
        RequestKind::OffsetForLeaderEpoch(r) => {
            offset_for_leader_epoch::handle(ctx, session, r).into()
        }
        RequestKind::CreateAcls(r) => create_acls::handle(ctx, session, r).await.into(),
        RequestKind::DescribeAcls(r) => describe_acls::handle(ctx, session, r).into(),
        RequestKind::DeleteAcls(r) => delete_acls::handle(ctx, session, r).await.into(),
        RequestKind::DescribeUserScramCredentials(r) => {
            describe_user_scram_credentials::handle(ctx, session, r).into()
        }
        RequestKind::AlterUserScramCredentials(r) => {
            alter_user_scram_credentials::handle(ctx, session, r)
                .await
                .into()
        }
        RequestKind::DescribeLogDirs(r) => describe_log_dirs::handle(ctx, session, r).into(),
        RequestKind::DescribeProducers(r) => describe_producers::handle(ctx, session, r).into(),
        RequestKind::ElectLeaders(r) => elect_leaders::handle(ctx, session, r).into(),
        RequestKind::AlterPartitionReassignments(r) => {
            alter_partition_reassignments::handle(ctx, session, r).into()
        }
        RequestKind::ListPartitionReassignments(r) => {
            list_partition_reassignments::handle(ctx, session, r).into()
        }
        RequestKind::DescribeClientQuotas(r) => {
            describe_client_quotas::handle(ctx, session, r).into()
        }
        RequestKind::AlterClientQuotas(r) => {
            alter_client_quotas::handle(ctx, session, r).await.into()
        }
        other => unsupported(other),
    }
}

fn unsupported(request: RequestKind) -> Reply {
    // `protocol::SUPPORTED` and the arms above list the same APIs; reaching this means
    // they disagree, which is a bug here, not the client's.
    Reply::Close(format!("no handler for {request:?}"))
}

pub fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Kafka's topic name rules: 1-249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; the limit is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// For `validate_only` requests (real ones are checked by the store, under its lock): refuses
/// `more` partitions when the broker would then hold more than `max_partitions`.
pub fn partition_room(ctx: &Ctx, more: i32) -> Result<(), (i16, String)> {
    let total = ctx.partition_count().saturating_add(more.max(0) as u64);
    if total > ctx.config.max_partitions as u64 {
        return Err((
            crate::error::code::INVALID_PARTITIONS,
            format!(
                "{more} more partitions would make {total}, over max_partitions {}",
                ctx.config.max_partitions
            ),
        ));
    }
    Ok(())
}

/// Whether `topic` exists and has partition `partition`.
pub fn partition_exists(ctx: &Ctx, topic: &str, partition: i32) -> bool {
    ctx.store
        .topic(topic)
        .is_some_and(|t| (0..t.partitions).contains(&partition))
}
