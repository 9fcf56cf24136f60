//! Topic configs with Kafka's names: which exist, their broker-wide defaults, and which
//! values are valid. DescribeConfigs, AlterConfigs, CreateTopics, Produce and retention all
//! read this one table: [`TOPIC_CONFIGS`] (the configs this broker acts on) and
//! [`kafka::STORED_CONFIGS`] (the rest of Apache Kafka 4.0's topic configs, validated with
//! Kafka's rules and stored, with no effect on a single broker). Names in neither are
//! INVALID_CONFIG.

use std::collections::BTreeMap;

use crate::config::Config;

mod kafka;

use kafka::LONG_MAX;

/// Longest config value accepted. Values are stored in the topic's record and sent back in
/// every DescribeConfigs; 32 KiB holds a throttled-replica list of thousands of partitions
/// and keeps a hostile client from parking megabytes in the catalog.
pub const MAX_VALUE_LEN: usize = 32 * 1024;

/// The value kinds of topic configs.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A 64-bit integer of at least this value.
    Long(i64),
    /// A 32-bit integer of at least this value.
    Int(i64),
    /// A 32-bit integer in one of these inclusive ranges.
    IntIn(&'static [(i64, i64)]),
    /// A decimal number in this inclusive range.
    Double(f64, f64),
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these strings (APPEND / SUBTRACT apply).
    ListOf(&'static [&'static str]),
    /// Kafka's throttled-replica list: empty, `*`, or `partition:broker` pairs separated by
    /// commas.
    Replicas,
}

impl Kind {
    /// DescribeConfigs `config_type`: 1 boolean, 2 string, 3 int, 4 short, 5 long, 6 double,
    /// 7 list.
    pub fn wire_type(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::OneOf(_) => 2,
            Kind::Int(_) | Kind::IntIn(_) => 3,
            Kind::Long(_) => 5,
            Kind::Double(..) => 6,
            Kind::ListOf(_) | Kind::Replicas => 7,
        }
    }

    pub fn is_list(self) -> bool {
        matches!(self, Kind::ListOf(_) | Kind::Replicas)
    }
}

/// One topic config: its name, kind, the broker setting that gives its default (Kafka's
/// name for it, and its value here), and what it does.
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub broker_name: &'static str,
    pub default: fn(&Config) -> String,
    pub doc: &'static str,
}

/// The topic configs this broker acts on. Kafka's others are in [`kafka::STORED_CONFIGS`];
/// see [`all`].
pub const TOPIC_CONFIGS: &[Def] = &[
    Def {
        name: "cleanup.policy",
        kind: Kind::ListOf(&["compact", "delete"]),
        broker_name: "log.cleanup.policy",
        default: |_| "delete".into(),
        doc: "delete: old segments are dropped by retention; compact: the log cleaner keeps the latest record of each key, and records without a key are refused (INVALID_RECORD); both: compacted and retention applies",
    },
    Def {
        name: "delete.retention.ms",
        kind: Kind::Long(0),
        broker_name: "log.cleaner.delete.retention.ms",
        default: |_| "86400000".into(),
        doc: "compacted topics: a tombstone (null value) stays readable at least this long after it was written, then the cleaner removes it",
    },
    Def {
        name: "max.compaction.lag.ms",
        kind: Kind::Long(1),
        broker_name: "log.cleaner.max.compaction.lag.ms",
        default: |_| LONG_MAX.into(),
        doc: "compacted topics: the active segment rolls once this old, and a partition with dirty data this old is cleaned whatever its dirty ratio",
    },
    Def {
        name: "min.cleanable.dirty.ratio",
        kind: Kind::Double(0.0, 1.0),
        broker_name: "log.cleaner.min.cleanable.ratio",
        default: |_| "0.5".into(),
        doc: "compacted topics: the cleaner takes a partition once this share of its cleanable bytes is dirty (not yet compacted)",
    },
    Def {
        name: "min.compaction.lag.ms",
        kind: Kind::Long(0),
        broker_name: "log.cleaner.min.compaction.lag.ms",
        default: |_| "0".into(),
        doc: "compacted topics: a record stays uncompacted at least this long (judged by when its segment was sealed, on the broker's clock)",
    },
    Def {
        name: "retention.ms",
        kind: Kind::Long(-1),
        broker_name: "log.retention.ms",
        default: |c| c.retention_ms.to_string(),
        doc: "drop a segment once its newest record is older than this; -1 keeps data forever",
    },
    Def {
        name: "retention.bytes",
        kind: Kind::Long(-1),
        broker_name: "log.retention.bytes",
        default: |c| c.retention_bytes.to_string(),
        doc: "drop the oldest segments while a partition holds more than this; -1: no limit",
    },
    Def {
        name: "segment.bytes",
        // Kafka 3's lower bound, 14 bytes (one legacy record header). Kafka 4.0 raised it to
        // 1 MiB (KIP-1030) because each segment costs it files and file handles; a segment
        // here is one small metadata record, and small segments make retention fine-grained
        // (and retention tests fast), so the older bound stays.
        kind: Kind::Int(14),
        broker_name: "log.segment.bytes",
        default: |c| c.segment_bytes.to_string(),
        doc: "roll a new segment when the active one would grow past this",
    },
    Def {
        name: "segment.ms",
        kind: Kind::Long(1),
        broker_name: "log.roll.ms",
        default: |c| c.segment_ms.to_string(),
        doc: "roll a new segment when the active one is older than this",
    },
    Def {
        name: "max.message.bytes",
        kind: Kind::Int(0),
        broker_name: "message.max.bytes",
        default: |c| c.message_max_bytes.to_string(),
        doc: "largest record batch accepted",
    },
    Def {
        name: "message.timestamp.type",
        kind: Kind::OneOf(&["CreateTime", "LogAppendTime"]),
        broker_name: "log.message.timestamp.type",
        default: |c| c.message_timestamp_type.clone(),
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock",
    },
    Def {
        name: "min.insync.replicas",
        kind: Kind::Int(1),
        broker_name: "min.insync.replicas",
        default: |_| "1".into(),
        doc: "replicas that must acknowledge acks=all writes; this broker is the only one, so above 1 every acks=all produce gets NOT_ENOUGH_REPLICAS",
    },
    Def {
        name: "compression.type",
        kind: Kind::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        broker_name: "compression.type",
        default: |_| "producer".into(),
        doc: "producer: batches are stored as the producer compressed them; a codec (or uncompressed): batches compressed otherwise are recompressed with it on produce",
    },
    Def {
        name: "remote.storage.enable",
        kind: Kind::Bool,
        broker_name: "remote.log.storage.system.enable",
        default: |_| "false".into(),
        doc: "tier sealed segments to the archive (object storage)",
    },
    Def {
        name: "local.retention.ms",
        kind: Kind::Long(-2),
        broker_name: "log.local.retention.ms",
        default: |_| "-2".into(),
        doc: "with remote storage, how long segments stay on local disk; -2: as retention.ms",
    },
    Def {
        name: "local.retention.bytes",
        kind: Kind::Long(-2),
        broker_name: "log.local.retention.bytes",
        default: |_| "-2".into(),
        doc: "with remote storage, bytes kept on local disk per partition; -2: as retention.bytes",
    },
    // Strata's per-partition throughput caps (crate::quota::partition): no broker-wide
    // setting; the default, Long.MAX_VALUE, is no cap.
    Def {
        name: crate::quota::partition::INGRESS_BYTES,
        kind: Kind::Long(1),
        broker_name: crate::quota::partition::INGRESS_BYTES,
        default: |_| crate::quota::partition::UNCAPPED.to_string(),
        doc: "bytes per second each partition accepts; produce requests over it are throttled",
    },
    Def {
        name: crate::quota::partition::INGRESS_RECORDS,
        kind: Kind::Long(1),
        broker_name: crate::quota::partition::INGRESS_RECORDS,
        default: |_| crate::quota::partition::UNCAPPED.to_string(),
        doc: "records per second each partition accepts; produce requests over it are throttled",
    },
    Def {
        name: crate::quota::partition::EGRESS_BYTES,
        kind: Kind::Long(1),
        broker_name: crate::quota::partition::EGRESS_BYTES,
        default: |_| crate::quota::partition::UNCAPPED.to_string(),
        doc: "bytes per second each partition sends to consumers; fetches over it are throttled",
    },
];

/// Every topic config Kafka 4.0 defines (and this broker's own), in table order.
pub fn all() -> impl Iterator<Item = &'static Def> {
    TOPIC_CONFIGS.iter().chain(kafka::STORED_CONFIGS)
}

pub fn def(name: &str) -> Option<&'static Def> {
    all().find(|d| d.name == name)
}

/// Checks one `name=value` and returns the value as it is stored (numbers without
/// surrounding blanks, list items trimmed); the error says what is wrong.
pub fn normalize(name: &str, value: &str) -> Result<String, String> {
    validate(name, value)?;
    Ok(match def(name).map(|d| d.kind) {
        Some(k) if k.is_list() => value
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(","),
        Some(Kind::Bool) => value.trim().to_ascii_lowercase(),
        _ => value.trim().to_string(),
    })
}

/// Checks one `name=value` with Kafka's validator for it; the error says what is wrong.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(d) = def(name) else {
        return Err(format!("unknown topic config {name:?}"));
    };
    if value.len() > MAX_VALUE_LEN {
        return Err(format!(
            "{name}: a value of {} bytes is longer than the {MAX_VALUE_LEN} accepted",
            value.len()
        ));
    }
    let v = value.trim();
    let ok = match d.kind {
        Kind::Long(min) => v.parse::<i64>().is_ok_and(|v| v >= min),
        Kind::Int(min) => v.parse::<i32>().is_ok_and(|v| i64::from(v) >= min),
        Kind::IntIn(ranges) => v.parse::<i32>().is_ok_and(|v| {
            ranges
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&i64::from(v)))
        }),
        Kind::Double(lo, hi) => v.parse::<f64>().is_ok_and(|v| (lo..=hi).contains(&v)),
        Kind::Bool => matches!(v.to_ascii_lowercase().as_str(), "true" | "false"),
        Kind::OneOf(allowed) => allowed.contains(&value),
        Kind::ListOf(allowed) => {
            !value.is_empty() && value.split(',').all(|v| allowed.contains(&v.trim()))
        }
        Kind::Replicas => replica_list_ok(value),
    };
    if ok {
        return Ok(());
    }
    Err(match d.kind {
        Kind::Long(min) | Kind::Int(min) => format!("{name}={value:?} must be an integer >= {min}"),
        Kind::IntIn(ranges) => {
            let ranges: Vec<String> = ranges
                .iter()
                .map(|&(lo, hi)| match lo == hi {
                    true => lo.to_string(),
                    false => format!("[{lo}, {hi}]"),
                })
                .collect();
            format!(
                "{name}={value:?} must be an integer in {}",
                ranges.join(" or ")
            )
        }
        Kind::Double(lo, hi) => format!("{name}={value:?} must be a number in [{lo}, {hi}]"),
        Kind::Bool => format!("{name}={value:?} must be true or false"),
        Kind::OneOf(allowed) | Kind::ListOf(allowed) => {
            format!("{name}={value:?} must be one of {allowed:?}")
        }
        Kind::Replicas => format!(
            "{name}={value:?} must be empty, * or a list of partition:broker pairs (e.g. 0:1,1:1)"
        ),
    })
}

/// Kafka's throttled-replica list: empty, `*` alone, or `partition:broker` pairs of
/// non-negative integers, separated by commas (blanks around items allowed).
fn replica_list_ok(value: &str) -> bool {
    let items: Vec<&str> = value.split(',').map(str::trim).collect();
    if items == [""] || items == ["*"] {
        return true;
    }
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    items.iter().all(|item| {
        item.split_once(':')
            .is_some_and(|(p, b)| number(p.trim()) && number(b.trim()))
    })
}

/// Validates and normalizes a whole set of `name -> value` pairs, each alone and then
/// together ([`check_together`]).
pub fn normalize_all(
    configs: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let configs = configs
        .into_iter()
        .map(|(k, v)| normalize(&k, &v).map(|n| (k, n)))
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    check_together(&configs)?;
    Ok(configs)
}

/// The rules between a topic's (normalized) configs. As in Kafka, a compacted topic cannot
/// be tiered: the cleaner rewrites sealed segments, which the archive holds as written.
pub fn check_together(configs: &BTreeMap<String, String>) -> Result<(), String> {
    let compacted = configs
        .get("cleanup.policy")
        .is_some_and(|p| p.split(',').any(|x| x.trim() == "compact"));
    if compacted
        && configs
            .get("remote.storage.enable")
            .is_some_and(|v| v == "true")
    {
        return Err(
            "remote storage is only supported for topics with cleanup.policy=delete".into(),
        );
    }
    Ok(())
}

/// The value in force for `name` on a topic with these overrides.
pub fn effective(
    overrides: &BTreeMap<String, String>,
    config: &Config,
    name: &str,
) -> Option<String> {
    overrides
        .get(name)
        .cloned()
        .or_else(|| def(name).map(|d| (d.default)(config)))
}

/// A topic's effective numeric setting; `None` when unset or unparseable.
pub fn effective_i64(
    overrides: &BTreeMap<String, String>,
    config: &Config,
    name: &str,
) -> Option<i64> {
    effective(overrides, config, name)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_and_values() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("cleanup.policy", "compact").is_ok());
        assert!(validate("cleanup.policy", "compact, delete").is_ok());
        assert!(validate("cleanup.policy", "shred")
            .unwrap_err()
            .contains("delete"));
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("no.such.config", "1")
            .unwrap_err()
            .contains("unknown"));
        assert!(validate("segment.bytes", "99999999999").is_err());
        assert_eq!(normalize("max.message.bytes", " 20000").unwrap(), "20000");
        assert_eq!(normalize("cleanup.policy", "delete ").unwrap(), "delete");
        assert_eq!(normalize("preallocate", "TRUE").unwrap(), "true");
    }

    /// Kafka's validators for the configs stored without effect.
    #[test]
    fn kafka_validators() {
        for (name, good, bad) in [
            ("flush.ms", "0", "-1"),
            ("flush.messages", "1", "0"),
            ("compression.type", "lz4", "brotli"),
            ("compression.gzip.level", "-1", "0"),
            ("compression.gzip.level", "9", "10"),
            ("compression.lz4.level", "17", "18"),
            ("compression.zstd.level", "-131072", "23"),
            ("min.cleanable.dirty.ratio", "0.75", "1.5"),
            ("min.cleanable.dirty.ratio", "0", "NaN"),
            ("min.insync.replicas", "2", "0"),
            ("preallocate", "false", "yes"),
            ("leader.replication.throttled.replicas", "0:1, 1:1", "0:x"),
            ("follower.replication.throttled.replicas", "*", "*,0:1"),
            ("segment.index.bytes", "4", "3"),
            ("message.timestamp.after.max.ms", "0", "-5"),
        ] {
            assert!(validate(name, good).is_ok(), "{name}={good}");
            let err = validate(name, bad).unwrap_err();
            assert!(err.contains(name), "{name}={bad}: {err}");
        }
        assert!(validate("leader.replication.throttled.replicas", "").is_ok());
        assert!(
            validate("message.format.version", "3.0").is_err(),
            "gone in Kafka 4"
        );
        let huge = "1".repeat(MAX_VALUE_LEN + 1);
        assert!(validate("flush.ms", &huge).unwrap_err().contains("longer"));
    }

    #[test]
    fn names_are_unique_and_defaults_valid() {
        let c = Config::default();
        let mut seen = std::collections::HashSet::new();
        for d in all() {
            assert!(seen.insert(d.name), "{} twice", d.name);
            let v = (d.default)(&c);
            assert!(validate(d.name, &v).is_ok(), "default {}={v}", d.name);
        }
        assert!(seen.len() >= 34, "Kafka 4.0 defines 34 topic configs");
    }

    #[test]
    fn overrides_win_over_broker_defaults() {
        let c = Config {
            retention_ms: 1000,
            ..Config::default()
        };
        let mut o = BTreeMap::new();
        assert_eq!(effective_i64(&o, &c, "retention.ms"), Some(1000));
        o.insert("retention.ms".to_string(), "5".to_string());
        assert_eq!(effective_i64(&o, &c, "retention.ms"), Some(5));
    }
}
