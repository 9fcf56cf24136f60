//! The rest of Apache Kafka 4.0's topic configs, with Kafka's types, validators, defaults
//! and broker-level names, besides those in [`super::TOPIC_CONFIGS`]. They are accepted,
//! validated and stored so that admin tools and client test suites that set them work; each
//! doc says why it has no effect on this broker (one replica, a RocksDB log instead of
//! segment files).

use super::{Def, Kind};

/// Kafka's "no limit" for its time and count settings.
pub(super) const LONG_MAX: &str = "9223372036854775807";

pub const STORED_CONFIGS: &[Def] = &[
    Def {
        name: "compression.gzip.level",
        kind: Kind::IntIn(&[(-1, -1), (1, 9)]),
        broker_name: "compression.gzip.level",
        default: |_| "-1".into(),
        doc: "gzip level when compression.type=gzip recompresses batches (-1: the codec's default, 6)",
    },
    Def {
        name: "compression.lz4.level",
        kind: Kind::IntIn(&[(1, 17)]),
        broker_name: "compression.lz4.level",
        default: |_| "9".into(),
        doc: "lz4 level when compression.type=lz4 recompresses batches (1: fast; 2 and up: high compression, capped at 12 by the codec)",
    },
    Def {
        name: "compression.zstd.level",
        kind: Kind::IntIn(&[(-131_072, 22)]),
        broker_name: "compression.zstd.level",
        default: |_| "3".into(),
        doc: "zstd level when compression.type=zstd recompresses batches",
    },
    Def {
        name: "file.delete.delay.ms",
        kind: Kind::Long(0),
        broker_name: "log.segment.delete.delay.ms",
        default: |_| "60000".into(),
        doc: "stored only: retention deletes a segment's range at once (there are no segment files)",
    },
    Def {
        name: "flush.messages",
        kind: Kind::Long(1),
        broker_name: "log.flush.interval.messages",
        default: |_| LONG_MAX.into(),
        doc: "stored only: with fsync on (the default) every write is made durable by group commit before acks=all answers",
    },
    Def {
        name: "flush.ms",
        kind: Kind::Long(0),
        broker_name: "log.flush.interval.ms",
        default: |_| LONG_MAX.into(),
        doc: "stored only: with fsync on (the default) every write is made durable by group commit before acks=all answers",
    },
    Def {
        name: "follower.replication.throttled.replicas",
        kind: Kind::Replicas,
        broker_name: "follower.replication.throttled.replicas",
        default: |_| String::new(),
        doc: "stored only: there is no replication on a single broker",
    },
    Def {
        name: "index.interval.bytes",
        kind: Kind::Int(0),
        broker_name: "log.index.interval.bytes",
        default: |_| "4096".into(),
        doc: "stored only: every batch is indexed",
    },
    Def {
        name: "leader.replication.throttled.replicas",
        kind: Kind::Replicas,
        broker_name: "leader.replication.throttled.replicas",
        default: |_| String::new(),
        doc: "stored only: there is no replication on a single broker",
    },
    Def {
        name: "message.downconversion.enable",
        kind: Kind::Bool,
        broker_name: "log.message.downconversion.enable",
        default: |_| "true".into(),
        doc: "stored only: no down-conversion (a no-op in Kafka 4 too; Fetch below v4 is not served)",
    },
    Def {
        name: "message.timestamp.after.max.ms",
        kind: Kind::Long(0),
        broker_name: "log.message.timestamp.after.max.ms",
        default: |_| "3600000".into(),
        doc: "stored only: record timestamps ahead of the broker's clock are not refused",
    },
    Def {
        name: "message.timestamp.before.max.ms",
        kind: Kind::Long(0),
        broker_name: "log.message.timestamp.before.max.ms",
        default: |_| LONG_MAX.into(),
        doc: "stored only: record timestamps behind the broker's clock are not refused",
    },
    Def {
        name: "preallocate",
        kind: Kind::Bool,
        broker_name: "log.preallocate",
        default: |_| "false".into(),
        doc: "stored only: there are no segment files to preallocate",
    },
    Def {
        name: "remote.log.copy.disable",
        kind: Kind::Bool,
        broker_name: "remote.log.copy.disable",
        default: |_| "false".into(),
        doc: "stored only: with remote.storage.enable=true sealed segments are always archived",
    },
    Def {
        name: "remote.log.delete.on.disable",
        kind: Kind::Bool,
        broker_name: "remote.log.delete.on.disable",
        default: |_| "false".into(),
        doc: "stored only: turning remote storage off keeps the archive",
    },
    Def {
        name: "segment.index.bytes",
        kind: Kind::Int(4),
        broker_name: "log.index.size.max.bytes",
        default: |_| "10485760".into(),
        doc: "stored only: the batch index lives in RocksDB, not in per-segment index files",
    },
    Def {
        name: "segment.jitter.ms",
        kind: Kind::Long(0),
        broker_name: "log.roll.jitter.ms",
        default: |_| "0".into(),
        doc: "stored only: segments roll at segment.ms exactly",
    },
    Def {
        name: "unclean.leader.election.enable",
        kind: Kind::Bool,
        broker_name: "unclean.leader.election.enable",
        default: |_| "false".into(),
        doc: "stored only: the one broker is always the leader",
    },
];
