//! On-disk metadata records, encoded with prost so they can gain fields without migrations.

use prost::Message;

/// `meta` CF, tag Topic.
#[derive(Clone, PartialEq, Message)]
pub struct TopicRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    /// UUID bytes (16).
    #[prost(bytes = "vec", tag = "2")]
    pub id: Vec<u8>,
    /// Storage partition id of partition index i, for each i.
    #[prost(uint64, repeated, tag = "3")]
    pub partition_ids: Vec<u64>,
    #[prost(btree_map = "string, string", tag = "4")]
    pub configs: std::collections::BTreeMap<String, String>,
    #[prost(int64, tag = "5")]
    pub created_ms: i64,
}

/// `meta` CF, tag Partition: what a partition keeps beyond its segments.
#[derive(Clone, PartialEq, Message)]
pub struct PartitionRecord {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub index: i32,
    #[prost(int64, tag = "3")]
    pub log_start_offset: i64,
    /// Next offset when every segment is gone (after truncation of the whole log).
    #[prost(int64, tag = "4")]
    pub next_offset_floor: i64,
}

/// `meta` CF, tag Segment. Written in the same atomic write as every batch of the segment.
#[derive(Clone, PartialEq, Message)]
pub struct SegmentRecord {
    #[prost(int64, tag = "1")]
    pub base_offset: i64,
    #[prost(int64, tag = "2")]
    pub last_offset: i64,
    #[prost(uint64, tag = "3")]
    pub bytes: u64,
    #[prost(int64, tag = "4")]
    pub min_timestamp: i64,
    #[prost(int64, tag = "5")]
    pub max_timestamp: i64,
    #[prost(int64, tag = "6")]
    pub created_ms: i64,
    #[prost(uint32, tag = "7")]
    pub batches: u32,
}

/// `meta` CF, tag Cleaner: how far the log cleaner has compacted a partition, written in the
/// same atomic write as the end of the pass that got there.
#[derive(Clone, PartialEq, Message)]
pub struct CleanerRecord {
    /// Below this offset each key appears at most once (the log is clean).
    #[prost(int64, tag = "1")]
    pub first_dirty_offset: i64,
    /// When the oldest segment still holding a tombstone was sealed (broker clock, ms).
    #[prost(int64, optional, tag = "2")]
    pub tombstones_since_ms: Option<i64>,
}

/// One of a producer's recent batches, for duplicate detection.
#[derive(Clone, PartialEq, Message)]
pub struct ProducerBatch {
    #[prost(int32, tag = "1")]
    pub first_seq: i32,
    #[prost(int32, tag = "2")]
    pub last_seq: i32,
    #[prost(int64, tag = "3")]
    pub base_offset: i64,
    #[prost(int64, tag = "4")]
    pub last_offset: i64,
}

/// `meta` CF, tag Producer: an idempotent producer's state on one partition, written in the
/// same atomic write as the batch that changed it.
#[derive(Clone, PartialEq, Message)]
pub struct ProducerRecord {
    #[prost(int32, tag = "1")]
    pub epoch: i32,
    #[prost(message, repeated, tag = "2")]
    pub batches: Vec<ProducerBatch>,
    #[prost(int64, tag = "3")]
    pub last_timestamp: i64,
}

/// `meta` CF, tag GroupOffset.
#[derive(Clone, PartialEq, Message)]
pub struct GroupOffsetRecord {
    #[prost(int64, tag = "1")]
    pub offset: i64,
    #[prost(int32, tag = "2")]
    pub leader_epoch: i32,
    #[prost(string, tag = "3")]
    pub metadata: String,
    #[prost(int64, tag = "4")]
    pub commit_timestamp_ms: i64,
}

/// `idx` CF: one small entry per batch so timestamp look-ups never read batch bytes.
#[derive(Clone, PartialEq, Message)]
pub struct BatchIndexRecord {
    #[prost(int32, tag = "1")]
    pub last_offset_delta: i32,
    #[prost(int64, tag = "2")]
    pub max_timestamp: i64,
    #[prost(uint32, tag = "3")]
    pub size: u32,
}

/// `meta` CF, tag Acl: one access-control binding (Kafka's codes for the small integers).
#[derive(Clone, PartialEq, Message)]
pub struct AclRecord {
    #[prost(int32, tag = "1")]
    pub resource_type: i32,
    #[prost(string, tag = "2")]
    pub resource_name: String,
    #[prost(int32, tag = "3")]
    pub pattern_type: i32,
    #[prost(string, tag = "4")]
    pub principal: String,
    #[prost(string, tag = "5")]
    pub host: String,
    #[prost(int32, tag = "6")]
    pub operation: i32,
    #[prost(int32, tag = "7")]
    pub permission: i32,
}

/// `meta` CF, tag Scram: one user's salted SCRAM credential for one mechanism (RFC 5802's
/// StoredKey and ServerKey; the password and the salted password are never stored).
#[derive(Clone, PartialEq, Message)]
pub struct ScramRecord {
    #[prost(string, tag = "1")]
    pub user: String,
    #[prost(int32, tag = "2")]
    pub mechanism: i32,
    #[prost(int32, tag = "3")]
    pub iterations: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub salt: Vec<u8>,
    #[prost(bytes = "vec", tag = "5")]
    pub stored_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "6")]
    pub server_key: Vec<u8>,
}

/// One component of a client-quota entity: its type (`user`, `client-id`) and name; no name
/// is the type's default entity.
#[derive(Clone, PartialEq, Message)]
pub struct QuotaEntityPart {
    #[prost(string, tag = "1")]
    pub entity_type: String,
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
}

/// `meta` CF, tag ClientQuota: the quota values set for one entity (the caller's keys).
#[derive(Clone, PartialEq, Message)]
pub struct ClientQuotaRecord {
    #[prost(message, repeated, tag = "1")]
    pub entity: Vec<QuotaEntityPart>,
    #[prost(btree_map = "string, double", tag = "2")]
    pub values: std::collections::BTreeMap<String, f64>,
}

/// One protocol (assignor) a group member supports, with the member's metadata for it (the
/// consumer protocol's subscription).
#[derive(Clone, PartialEq, Message)]
pub struct GroupProtocolRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub metadata: bytes::Bytes,
}

/// A member of a group, as its group's metadata record keeps it.
#[derive(Clone, PartialEq, Message)]
pub struct GroupMemberRecord {
    #[prost(string, tag = "1")]
    pub member_id: String,
    /// Static members only (KIP-345).
    #[prost(string, optional, tag = "2")]
    pub instance_id: Option<String>,
    #[prost(string, tag = "3")]
    pub client_id: String,
    #[prost(string, tag = "4")]
    pub client_host: String,
    #[prost(uint64, tag = "5")]
    pub session_timeout_ms: u64,
    #[prost(uint64, tag = "6")]
    pub rebalance_timeout_ms: u64,
    /// In the member's order of preference.
    #[prost(message, repeated, tag = "7")]
    pub protocols: Vec<GroupProtocolRecord>,
    #[prost(bytes = "bytes", tag = "8")]
    pub assignment: bytes::Bytes,
}

/// `meta` CF, tag GroupMetadata: a consumer group's metadata (Kafka's group metadata record
/// in `__consumer_offsets`), written whole each time, so it survives restarts.
#[derive(Clone, PartialEq, Message)]
pub struct GroupMetadataRecord {
    #[prost(string, tag = "1")]
    pub protocol_type: String,
    #[prost(string, tag = "2")]
    pub protocol: String,
    #[prost(int32, tag = "3")]
    pub generation: i32,
    #[prost(string, tag = "4")]
    pub leader: String,
    #[prost(bool, tag = "5")]
    pub rebalance_pending: bool,
    #[prost(message, repeated, tag = "6")]
    pub members: Vec<GroupMemberRecord>,
}
