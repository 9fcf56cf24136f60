//! Topic configs with Kafka's names: which exist, and which values are valid.

use std::collections::BTreeMap;

/// The value kinds of topic configs.
enum Kind {
    /// A 64-bit integer of at least this value.
    Long(i64),
    /// A 32-bit integer of at least this value.
    Int(i64),
    Bool,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

/// Every topic config we accept. Names outside this list are INVALID_CONFIG.
const TOPIC_CONFIGS: &[(&str, Kind)] = &[
    // Only the delete policy exists until compaction does.
    ("cleanup.policy", Kind::OneOf(&["delete"])),
    ("retention.ms", Kind::Long(-1)),
    ("retention.bytes", Kind::Long(-1)),
    // Kafka's own lower bound for segment.bytes is 14 bytes (one legacy record header).
    ("segment.bytes", Kind::Int(14)),
    ("segment.ms", Kind::Long(1)),
    ("max.message.bytes", Kind::Int(0)),
    ("message.timestamp.type", Kind::OneOf(&["CreateTime", "LogAppendTime"])),
    // One replica: more than one in-sync replica can never be met.
    ("min.insync.replicas", Kind::OneOf(&["1"])),
    // Batches are stored as the producer compressed them.
    ("compression.type", Kind::OneOf(&["producer"])),
    ("remote.storage.enable", Kind::Bool),
    ("local.retention.ms", Kind::Long(-2)),
    ("local.retention.bytes", Kind::Long(-2)),
];

/// Checks one `name=value`; the error says what is wrong.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    let Some((_, kind)) = TOPIC_CONFIGS.iter().find(|(n, _)| *n == name) else {
        return Err(format!("unknown topic config {name:?}"));
    };
    let ok = match kind {
        Kind::Long(min) => value.trim().parse::<i64>().is_ok_and(|v| v >= *min),
        Kind::Int(min) => value.trim().parse::<i32>().is_ok_and(|v| i64::from(v) >= *min),
        Kind::Bool => matches!(value, "true" | "false"),
        Kind::OneOf(allowed) => allowed.contains(&value),
    };
    if ok {
        return Ok(());
    }
    Err(match kind {
        Kind::Long(min) | Kind::Int(min) => format!("{name}={value:?} must be an integer >= {min}"),
        Kind::Bool => format!("{name}={value:?} must be true or false"),
        Kind::OneOf(allowed) => format!("{name}={value:?} must be one of {allowed:?}"),
    })
}

/// Validates a whole set of `name -> value` pairs.
pub fn validate_all(configs: &BTreeMap<String, String>) -> Result<(), String> {
    configs.iter().try_for_each(|(k, v)| validate(k, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_and_values() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("cleanup.policy", "compact").unwrap_err().contains("delete"));
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
        assert!(validate("no.such.config", "1").unwrap_err().contains("unknown"));
        assert!(validate("segment.bytes", "99999999999").is_err());
    }
}
