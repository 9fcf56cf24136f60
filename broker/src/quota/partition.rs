//! Per-partition throughput caps, like a Kinesis shard's: topic configs that bound what each
//! partition takes in (bytes and records per second) and sends out (bytes per second),
//! whoever the clients are. Over a cap, requests are throttled, not failed: a Produce that
//! takes a partition over its ingress cap is accepted and its connection muted, and a Fetch
//! gets no data from a partition over its egress cap until it is back under.
//!
//! Each cap is a token bucket holding one window (`quota_window_size_seconds`) of the cap: a
//! partition may take a burst of one second's worth, then everything over the cap is debt,
//! and each request that adds to the debt waits until the whole debt is paid. So clients
//! sharing a partition queue behind each other, and together they get the cap (a shared
//! sampled rate would let each of them wait out the same excess at once, and together
//! overshoot).

use std::collections::BTreeMap;
use std::time::Duration;

use uuid::Uuid;

use super::rate::{Meter, Meters, Windows};

/// Topic configs (Strata's own, named in Kafka's style). The default, Long.MAX_VALUE as in
/// Kafka's quota configs, means no cap.
pub const INGRESS_BYTES: &str = "strata.partition.ingress.bytes.per.sec";
pub const INGRESS_RECORDS: &str = "strata.partition.ingress.records.per.sec";
pub const EGRESS_BYTES: &str = "strata.partition.egress.bytes.per.sec";
pub const UNCAPPED: i64 = i64::MAX;

/// The cap a topic's configs set under `name`, if any.
pub fn cap(configs: &BTreeMap<String, String>, name: &str) -> Option<f64> {
    configs
        .get(name)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&v| v > 0 && v < UNCAPPED)
        .map(|v| v as f64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Measure {
    IngressBytes,
    IngressRecords,
    EgressBytes,
}

/// What every partition with a cap has taken in and sent out recently.
pub struct Caps {
    meters: Meters<(Uuid, i32, Measure)>,
}

impl Caps {
    pub fn new(windows: Windows) -> Caps {
        Caps {
            meters: Meters::new(windows),
        }
    }

    /// Takes `value` (zero to look only) from the bucket of `key`; returns its debt's time.
    fn take(&self, key: (Uuid, i32, Measure), cap: f64, value: f64) -> Duration {
        self.meters.with(&key, Meter::bucket, |m, w, now| match m {
            Meter::Bucket(b) => b.take(w.size, w.span(), now, cap, value),
            Meter::Rate(..) => Duration::ZERO,
        })
    }

    /// Counts an append to a partition of the topic `(id, name)` with these configs; returns
    /// the throttle its ingress caps now call for.
    pub fn ingress(
        &self,
        topic: (Uuid, &str),
        configs: &BTreeMap<String, String>,
        partition: i32,
        bytes: usize,
        records: i64,
    ) -> Duration {
        let mut t = Duration::ZERO;
        for (measure, name, value) in [
            (Measure::IngressBytes, INGRESS_BYTES, bytes as f64),
            (
                Measure::IngressRecords,
                INGRESS_RECORDS,
                records.max(0) as f64,
            ),
        ] {
            if let Some(cap) = cap(configs, name) {
                t = t.max(self.take((topic.0, partition, measure), cap, value));
            }
        }
        counted(topic.1, "ingress", t);
        t
    }

    /// The throttle a partition's egress cap calls for before anything more is read from it.
    pub fn egress_due(&self, topic: Uuid, partition: i32, cap: f64) -> Duration {
        self.take((topic, partition, Measure::EgressBytes), cap, 0.0)
    }

    /// Counts bytes sent from a partition; returns the throttle its egress cap now calls for.
    pub fn egress(&self, topic: (Uuid, &str), partition: i32, cap: f64, bytes: usize) -> Duration {
        let t = self.take(
            (topic.0, partition, Measure::EgressBytes),
            cap,
            bytes as f64,
        );
        counted(topic.1, "egress", t);
        t
    }

    /// The most one read of a partition under `cap` returns: one window's worth (the bucket's
    /// size), so one read never puts it deeper in debt than that.
    pub fn read_bound(&self, cap: f64) -> usize {
        let bytes = cap * self.meters.windows.size.as_secs_f64();
        if bytes >= usize::MAX as f64 {
            usize::MAX
        } else {
            (bytes as usize).max(1)
        }
    }
}

/// Counts a throttle a cap called for, per topic (not per partition: bounded by topics).
pub fn counted(topic: &str, direction: &'static str, t: Duration) {
    if t.is_zero() {
        return;
    }
    let labels = [
        ("topic", topic.to_string()),
        ("direction", direction.to_string()),
    ];
    ::metrics::counter!("strata_partition_throttled_total", &labels).increment(1);
    ::metrics::counter!("strata_partition_throttle_time_ms_total", &labels)
        .increment(t.as_millis() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_come_from_configs() {
        let mut c = BTreeMap::new();
        assert_eq!(cap(&c, INGRESS_BYTES), None);
        c.insert(INGRESS_BYTES.to_string(), "1000".to_string());
        c.insert(EGRESS_BYTES.to_string(), UNCAPPED.to_string());
        c.insert(INGRESS_RECORDS.to_string(), "x".to_string());
        assert_eq!(cap(&c, INGRESS_BYTES), Some(1000.0));
        assert_eq!(cap(&c, EGRESS_BYTES), None, "Long.MAX_VALUE is no cap");
        assert_eq!(cap(&c, INGRESS_RECORDS), None);
    }

    #[test]
    fn ingress_over_the_cap_is_throttled() {
        let caps = Caps::new(Windows {
            samples: 11,
            size: Duration::from_secs(1),
        });
        let id = Uuid::new_v4();
        let mut c = BTreeMap::new();
        c.insert(INGRESS_RECORDS.to_string(), "100".to_string());
        // A burst of one second's worth (100 records) passes; 100 more are a second of debt,
        // and the next request waits behind that debt too.
        assert_eq!(caps.ingress((id, "t"), &c, 0, 10, 100), Duration::ZERO);
        let first = caps.ingress((id, "t"), &c, 0, 10, 100);
        assert!((first.as_secs_f64() - 1.0).abs() < 0.05, "{first:?}");
        let second = caps.ingress((id, "t"), &c, 0, 10, 50);
        assert!((second.as_secs_f64() - 1.5).abs() < 0.05, "{second:?}");
        // Another partition has its own bucket.
        assert_eq!(caps.ingress((id, "t"), &c, 1, 10, 100), Duration::ZERO);
        assert_eq!(caps.read_bound(100.0), 100);
        // Egress has its own bucket: nothing read yet, nothing due.
        assert_eq!(caps.egress_due(id, 0, 100.0), Duration::ZERO);
    }
}
