//! More of the broker's settings under Kafka's names, for DescribeConfigs on the broker
//! resource: Strata's settings that have a Kafka name, the fixed values of a one-broker
//! cluster (replication factors of 1, this node as controller), and the broker-level default
//! of every topic config (`log.flush.interval.ms`, `log.cleaner.min.cleanable.ratio`, ...), so
//! admin tools that read a broker's configs find the names they know. All read-only.

use crate::config::Config;
use crate::topic_config::{self, Kind};

/// Adds to `configs` each of these settings it does not already hold.
pub fn add_kafka_names(c: &Config, configs: &mut Vec<(&'static str, String, Kind)>) {
    let long = Kind::Long(i64::MIN);
    let int = Kind::Int(i64::MIN);
    let string = Kind::OneOf(&[]);
    let list = Kind::ListOf(&[]);
    let more = [
        ("broker.id", c.node_id.to_string(), int),
        ("process.roles", "broker,controller".to_string(), list),
        ("default.replication.factor", "1".into(), int),
        ("offsets.topic.replication.factor", "1".into(), int),
        ("transaction.state.log.replication.factor", "1".into(), int),
        ("transaction.state.log.min.isr", "1".into(), int),
        ("auto.leader.rebalance.enable", "false".into(), Kind::Bool),
        ("fetch.max.bytes", c.fetch_max_bytes.to_string(), int),
        (
            "connections.max.idle.ms",
            c.connections_max_idle_ms.to_string(),
            long,
        ),
        (
            "max.connections.per.ip",
            c.max_connections_per_ip.to_string(),
            int,
        ),
        (
            "max.connections.per.ip.overrides",
            c.max_connections_per_ip_overrides.clone(),
            string,
        ),
        (
            "queued.max.request.bytes",
            c.queued_max_request_bytes.to_string(),
            long,
        ),
        (
            "producer.id.expiration.ms",
            c.producer_id_expiration_ms.to_string(),
            int,
        ),
        (
            "listener.security.protocol.map",
            c.listener_security_protocol_map.clone(),
            string,
        ),
        (
            "sasl.enabled.mechanisms",
            c.sasl_enabled_mechanisms.clone(),
            list,
        ),
        (
            "connection.failed.authentication.delay.ms",
            c.connection_failed_authentication_delay_ms.to_string(),
            int,
        ),
        ("ssl.client.auth", c.ssl_client_auth.clone(), string),
        ("super.users", c.super_users.clone(), string),
        (
            "log.cleaner.enable",
            c.log_cleaner_enable.to_string(),
            Kind::Bool,
        ),
        ("log.cleaner.threads", "1".into(), int),
        (
            "log.cleaner.backoff.ms",
            c.log_cleaner_backoff_ms.to_string(),
            long,
        ),
        (
            "log.cleaner.dedupe.buffer.size",
            c.log_cleaner_dedupe_buffer_size.to_string(),
            long,
        ),
        (
            "log.cleaner.io.max.bytes.per.second",
            match c.log_cleaner_io_max_bytes_per_second {
                0 => format!("{:e}", f64::MAX),
                n => n.to_string(),
            },
            Kind::Double(0.0, f64::MAX),
        ),
        (
            "allow.everyone.if.no.acl.found",
            c.allow_everyone_if_no_acl_found.to_string(),
            Kind::Bool,
        ),
    ];
    for entry in more {
        if !configs.iter().any(|(n, _, _)| *n == entry.0) {
            configs.push(entry);
        }
    }
    for d in topic_config::all() {
        if !configs.iter().any(|(n, _, _)| *n == d.broker_name) {
            configs.push((d.broker_name, (d.default)(c), d.kind));
        }
    }
}
