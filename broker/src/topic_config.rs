//! Topic configs with Kafka's names: which exist, their broker-wide defaults, and which
//! values are valid. DescribeConfigs, AlterConfigs, CreateTopics and retention all read
//! this one table.

use std::collections::BTreeMap;

use crate::config::Config;

/// The value kinds of topic configs.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// A 64-bit integer of at least this value.
    Long(i64),
    /// A 32-bit integer of at least this value.
    Int(i64),
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these strings (APPEND / SUBTRACT apply).
    ListOf(&'static [&'static str]),
}

impl Kind {
    /// DescribeConfigs `config_type`: 1 boolean, 2 string, 3 int, 4 short, 5 long, 7 list.
    pub fn wire_type(self) -> i8 {
        match self {
            Kind::Bool => 1,
            Kind::OneOf(_) => 2,
            Kind::Int(_) => 3,
            Kind::Long(_) => 5,
            Kind::ListOf(_) => 7,
        }
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

/// Every topic config we accept. Names outside this table are INVALID_CONFIG.
pub const TOPIC_CONFIGS: &[Def] = &[
    Def {
        name: "cleanup.policy",
        // Only the delete policy exists until compaction does.
        kind: Kind::ListOf(&["delete"]),
        broker_name: "log.cleanup.policy",
        default: |_| "delete".into(),
        doc: "delete: old segments are dropped by retention (compact is not supported)",
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
        // Kafka's own lower bound: 14 bytes (one legacy record header).
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
        // One replica: more than one in-sync replica can never be met.
        kind: Kind::OneOf(&["1"]),
        broker_name: "min.insync.replicas",
        default: |_| "1".into(),
        doc: "replicas that must acknowledge acks=all writes (this broker is the only one)",
    },
    Def {
        name: "compression.type",
        // Batches are stored as the producer compressed them.
        kind: Kind::OneOf(&["producer"]),
        broker_name: "compression.type",
        default: |_| "producer".into(),
        doc: "producer: batches are stored as the producer compressed them",
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

pub fn def(name: &str) -> Option<&'static Def> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks one `name=value` and returns the value as it is stored (numbers without
/// surrounding blanks, list items trimmed); the error says what is wrong.
pub fn normalize(name: &str, value: &str) -> Result<String, String> {
    validate(name, value)?;
    Ok(match def(name).map(|d| d.kind) {
        Some(Kind::ListOf(_)) => value
            .split(',')
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(","),
        _ => value.trim().to_string(),
    })
}

/// Checks one `name=value`; the error says what is wrong.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some(d) = def(name) else {
        return Err(format!("unknown topic config {name:?}"));
    };
    let ok = match d.kind {
        Kind::Long(min) => value.trim().parse::<i64>().is_ok_and(|v| v >= min),
        Kind::Int(min) => value
            .trim()
            .parse::<i32>()
            .is_ok_and(|v| i64::from(v) >= min),
        Kind::Bool => matches!(value.trim(), "true" | "false"),
        Kind::OneOf(allowed) => allowed.contains(&value),
        Kind::ListOf(allowed) => {
            !value.is_empty() && value.split(',').all(|v| allowed.contains(&v.trim()))
        }
    };
    if ok {
        return Ok(());
    }
    Err(match d.kind {
        Kind::Long(min) | Kind::Int(min) => format!("{name}={value:?} must be an integer >= {min}"),
        Kind::Bool => format!("{name}={value:?} must be true or false"),
        Kind::OneOf(allowed) | Kind::ListOf(allowed) => {
            format!("{name}={value:?} must be one of {allowed:?}")
        }
    })
}

/// Validates and normalizes a whole set of `name -> value` pairs.
pub fn normalize_all(
    configs: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    configs
        .into_iter()
        .map(|(k, v)| normalize(&k, &v).map(|n| (k, n)))
        .collect()
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
        assert!(validate("cleanup.policy", "compact")
            .unwrap_err()
            .contains("delete"));
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("no.such.config", "1")
            .unwrap_err()
            .contains("unknown"));
        assert!(validate("segment.bytes", "99999999999").is_err());
        assert_eq!(normalize("max.message.bytes", " 20000").unwrap(), "20000");
        assert_eq!(normalize("cleanup.policy", "delete ").unwrap(), "delete");
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
