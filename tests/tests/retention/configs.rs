//! DescribeConfigs, AlterConfigs and CreateTopics with configs.

use super::*;
use strata_tests::raw;

/// Kafka's error code for a topic that does not exist.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

// ------------------------------------------------------------------ configs

fn entry<'a>(entries: &'a BTreeMap<String, ConfigEntry>, name: &str) -> Result<&'a ConfigEntry> {
    entries.get(name).ok_or_else(|| {
        anyhow!(
            "{name} missing from DescribeConfigs; have {:?}",
            entries.keys().collect::<Vec<_>>()
        )
    })
}

/// DescribeConfigs on a topic: every topic config, with its value and source — the built-in
/// default, a broker setting that differs from it, or the topic's own override.
#[test]
fn describe_configs_shows_defaults_overrides_and_sources() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // A non-default broker retention: topics without an override inherit it.
    let broker = start_broker(dir.path(), |c| c.retention_ms = 3_600_000)?;
    let bs = broker.bootstrap();
    let topic = topic_name("describe");
    create_with(
        &bs,
        &topic,
        1,
        &[("segment.ms", "5000"), ("max.message.bytes", "30000")],
    )?;
    let entries = describe_topic(&bs, &topic)?;
    for name in [
        "cleanup.policy",
        "retention.ms",
        "retention.bytes",
        "segment.bytes",
        "segment.ms",
        "max.message.bytes",
        "message.timestamp.type",
        "min.insync.replicas",
        "compression.type",
    ] {
        entry(&entries, name)?;
    }
    let check = |name: &str, value: &str, source: ConfigSource, is_default: bool| -> Result<()> {
        let e = entry(&entries, name)?;
        ensure!(
            e.value.as_deref() == Some(value)
                && e.source == source
                && e.is_default == is_default
                && !e.is_read_only
                && !e.is_sensitive,
            "{name}: {e:?}; expected value {value}, source {source:?}, is_default {is_default}"
        );
        Ok(())
    };
    check("segment.ms", "5000", ConfigSource::DynamicTopic, false)?;
    check(
        "max.message.bytes",
        "30000",
        ConfigSource::DynamicTopic,
        false,
    )?;
    check("retention.ms", "3600000", ConfigSource::StaticBroker, false)?;
    check("retention.bytes", "-1", ConfigSource::Default, true)?;
    check("cleanup.policy", "delete", ConfigSource::Default, true)?;
    check(
        "message.timestamp.type",
        "CreateTime",
        ConfigSource::Default,
        true,
    )?;
    check(
        "segment.bytes",
        &(1u64 << 30).to_string(),
        ConfigSource::Default,
        true,
    )?;

    // An unknown topic has no configs. (The rdkafka crate drops per-resource error codes of
    // DescribeConfigs; the Python suite checks UNKNOWN_TOPIC_OR_PARTITION itself.)
    let admin = admin_client(&bs)?;
    let missing = topic_name("no-such-topic");
    let r = futures::executor::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(&missing)], &admin_opts()),
    )?;
    ensure!(
        matches!(
            r.as_slice(),
            [Err(RDKafkaErrorCode::UnknownTopicOrPartition)]
        ) || matches!(r.as_slice(), [Ok(c)] if c.entries.is_empty()),
        "DescribeConfigs of a missing topic: {r:?}"
    );
    broker.shutdown()
}

/// DescribeConfigs on the broker resource lists the broker's settings, all read-only, with
/// their values; AlterConfigs on it is refused.
#[test]
fn describe_configs_on_the_broker_lists_read_only_settings() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |c| c.retention_bytes = 123_456_789)?;
    let bs = broker.bootstrap();
    let entries = describe(&bs, ResourceSpecifier::Broker(1))?;
    let want = [
        ("log.retention.check.interval.ms", "200"),
        ("log.retention.bytes", "123456789"),
        ("log.retention.ms", "604800000"),
        ("message.max.bytes", "1048588"),
        ("log.cleanup.policy", "delete"),
        ("num.partitions", "1"),
    ];
    for (name, value) in want {
        let e = entry(&entries, name)?;
        ensure!(
            e.value.as_deref() == Some(value),
            "{name}: {e:?}, expected {value}"
        );
    }
    let writable: Vec<&String> = entries
        .values()
        .filter(|e| !e.is_read_only)
        .map(|e| &e.name)
        .collect();
    ensure!(
        writable.is_empty(),
        "broker settings not read-only: {writable:?}"
    );
    let e = entry(&entries, "log.retention.bytes")?;
    ensure!(
        e.source == ConfigSource::StaticBroker,
        "changed broker setting: {e:?}"
    );
    let e = entry(&entries, "log.retention.ms")?;
    ensure!(
        e.source == ConfigSource::Default && e.is_default,
        "built-in broker setting: {e:?}"
    );
    ensure!(
        entries.contains_key("log.dirs") && entries.contains_key("listeners"),
        "{:?}",
        entries.keys()
    );

    // AlterConfigs on the broker changes nothing. (The rdkafka crate reports every
    // AlterConfigs resource as a success whatever the broker answered; the error code is
    // checked by the Python suite.)
    let admin = admin_client(&bs)?;
    let alter = AlterConfig::new(ResourceSpecifier::Broker(1)).set("log.retention.ms", "1000");
    futures::executor::block_on(admin.alter_configs([&alter], &admin_opts()))?;
    let after = describe(&bs, ResourceSpecifier::Broker(1))?;
    let e = entry(&after, "log.retention.ms")?;
    ensure!(
        e.value.as_deref() == Some("604800000"),
        "after AlterConfigs on the broker: {e:?}"
    );
    broker.shutdown()
}

/// Unknown names and values Kafka's validators refuse are INVALID_CONFIG and change nothing;
/// validate_only changes nothing.
#[test]
fn alter_configs_validates_names_and_values() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |c| c.auto_create_topics = false)?;
    let bs = broker.bootstrap();
    let topic = topic_name("alter-bad");
    create_with(&bs, &topic, 1, &[("retention.ms", "86400000")])?;
    let bad: &[&[(&str, &str)]] = &[
        &[("no.such.config", "1")],
        &[("retention.ms", "soon")],
        &[("retention.ms", "-5")],
        &[("segment.bytes", "99999999999")],
        &[("cleanup.policy", "shred")],
        &[("cleanup.policy", "delete,shred")],
        &[("flush.ms", "-1")],
        &[("min.cleanable.dirty.ratio", "1.5")],
        &[("compression.type", "brotli")],
        &[("message.timestamp.type", "WallClock")],
        &[("remote.storage.enable", "maybe")],
        // One bad entry spoils the whole request.
        &[("retention.ms", "1000"), ("max.message.bytes", "lots")],
    ];
    // The rdkafka crate reports every AlterConfigs resource as a success (it never reads
    // the per-resource error), so the request is sent raw and its error code checked; then
    // the effect: AlterConfigs replaces every override, so any of these being applied would
    // drop retention.ms=86400000 or change it.
    for configs in bad {
        let (code, message) = raw::alter_topic_configs(broker.addr(), &topic, configs, false)?;
        ensure!(
            code == raw::INVALID_CONFIG,
            "AlterConfigs {configs:?}: error {code} ({message:?}), expected INVALID_CONFIG"
        );
        let e = describe_topic(&bs, &topic)?;
        ensure!(
            e["retention.ms"].value.as_deref() == Some("86400000")
                && e["retention.ms"].source == ConfigSource::DynamicTopic,
            "after refused AlterConfigs {configs:?}: retention.ms {:?}",
            e["retention.ms"]
        );
        for (name, _) in configs.iter() {
            if let Some(c) = e.get(*name) {
                ensure!(
                    c.source != ConfigSource::DynamicTopic || *name == "retention.ms",
                    "{name} applied: {c:?}"
                );
            }
        }
    }

    // validate_only: accepted, not applied.
    ensure!(alter_topic(&bs, &topic, &[("retention.ms", "1000")], true)? == Ok(()));
    ensure!(
        config_value(&bs, &topic, "retention.ms")?.as_deref() == Some("86400000"),
        "validate_only applied the change"
    );

    // Valid values, including the edges.
    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
                ("cleanup.policy", "delete")
            ],
            false
        )? == Ok(())
    );
    let e = describe_topic(&bs, &topic)?;
    ensure!(
        e["retention.ms"].value.as_deref() == Some("-1")
            && e["retention.ms"].source == ConfigSource::DynamicTopic,
        "{:?}",
        e["retention.ms"]
    );

    // A topic that does not exist.
    let missing = topic_name("alter-missing");
    let (code, message) =
        raw::alter_topic_configs(broker.addr(), &missing, &[("retention.ms", "1000")], false)?;
    ensure!(
        code == UNKNOWN_TOPIC_OR_PARTITION,
        "AlterConfigs on {missing}: error {code} ({message:?}), expected UNKNOWN_TOPIC_OR_PARTITION"
    );
    let md = new_consumer(&bs)?.fetch_metadata(Some(&missing), CALL_TIMEOUT)?;
    ensure!(
        md.topics()
            .first()
            .and_then(|t| t.error())
            .map(RDKafkaErrorCode::from)
            == Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "AlterConfigs created {missing}"
    );
    broker.shutdown()
}

/// CreateTopics with configs (the topic shows them as overrides) and with validate_only
/// (nothing is created; bad configs are still refused).
#[test]
fn create_topics_with_configs_and_validate_only() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |c| c.auto_create_topics = false)?;
    let bs = broker.bootstrap();
    let admin = admin_client(&bs)?;
    let topic = topic_name("create-cfg");
    let new = NewTopic::new(&topic, 2, TopicReplication::Fixed(1))
        .set("retention.ms", "7200000")
        .set("cleanup.policy", "delete")
        .set("segment.bytes", "1048576");
    let opts = admin_opts().validate_only(true);
    let r = futures::executor::block_on(admin.create_topics([&new], &opts))?;
    ensure!(
        matches!(r.as_slice(), [Ok(t)] if *t == topic),
        "validate_only create: {r:?}"
    );
    let md = new_consumer(&bs)?.fetch_metadata(Some(&topic), CALL_TIMEOUT)?;
    ensure!(
        md.topics()
            .first()
            .and_then(|t| t.error())
            .map(RDKafkaErrorCode::from)
            == Some(RDKafkaErrorCode::UnknownTopicOrPartition),
        "validate_only created the topic"
    );
    let bad = NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "shred");
    let r = futures::executor::block_on(admin.create_topics([&bad], &opts))?;
    ensure!(
        matches!(r.as_slice(), [Err((_, RDKafkaErrorCode::InvalidConfig))]),
        "validate_only with cleanup.policy=shred: {r:?}"
    );

    let r = futures::executor::block_on(admin.create_topics([&new], &admin_opts()))?;
    ensure!(matches!(r.as_slice(), [Ok(_)]), "create: {r:?}");
    let e = describe_topic(&bs, &topic)?;
    for (name, value) in [
        ("retention.ms", "7200000"),
        ("cleanup.policy", "delete"),
        ("segment.bytes", "1048576"),
    ] {
        ensure!(
            e[name].value.as_deref() == Some(value) && e[name].source == ConfigSource::DynamicTopic,
            "{name}: {:?}",
            e[name]
        );
    }
    ensure!(e["retention.bytes"].source == ConfigSource::Default);
    ensure!(partition_count(&bs, &topic)? == 2);
    broker.shutdown()
}

/// Config changes are in force at once (max.message.bytes lowered: a big record is
/// MESSAGE_TOO_LARGE right away) and persist across a graceful restart (SIGTERM, same data
/// directory); AlterConfigs replaces the whole set, so leaving a config out resets it.
#[test]
fn config_changes_apply_at_once_and_persist_across_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut broker =
        BrokerProcess::spawn(&data, 0, &[("STRATA_RETENTION_CHECK_INTERVAL_MS", "200")])?;
    let bs = broker.bootstrap();
    let topic = topic_name("persist");
    create_topic(&bs, &topic, 1)?;
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(
        d.error.is_none() && d.offset == 0,
        "30 kB with the default limit: {d:?}"
    );

    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[("max.message.bytes", "20000"), ("retention.ms", "7200000")],
            false
        )? == Ok(())
    );
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(
        too_large(&d),
        "30 kB right after max.message.bytes=20000: {d:?}"
    );
    let d = produce_one(&bs, &topic, 10_000)?;
    ensure!(d.error.is_none() && d.offset == 1, "10 kB: {d:?}");

    let status = broker.terminate()?;
    ensure!(
        status.success(),
        "SIGTERM exit {status}; log:\n{}",
        broker.log_tail(4000)
    );
    broker.restart()?;

    let e = describe_topic(&bs, &topic)?;
    for (name, value) in [("max.message.bytes", "20000"), ("retention.ms", "7200000")] {
        ensure!(
            e[name].value.as_deref() == Some(value) && e[name].source == ConfigSource::DynamicTopic,
            "after restart {name}: {:?}",
            e[name]
        );
    }
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(too_large(&d), "30 kB after restart: {d:?}");

    // Replace: only retention.ms stays overridden; max.message.bytes is back to the default.
    ensure!(alter_topic(&bs, &topic, &[("retention.ms", "7200000")], false)? == Ok(()));
    let d = produce_one(&bs, &topic, 30_000)?;
    ensure!(
        d.error.is_none() && d.offset == 2,
        "30 kB after max.message.bytes was dropped: {d:?}"
    );
    let e = describe_topic(&bs, &topic)?;
    ensure!(
        e["max.message.bytes"].source == ConfigSource::Default
            && e["max.message.bytes"].value.as_deref() == Some("1048588"),
        "{:?}",
        e["max.message.bytes"]
    );

    // Retention set at run time applies too: everything is older than 1 s soon.
    ensure!(
        alter_topic(
            &bs,
            &topic,
            &[("retention.ms", "1000"), ("segment.ms", "100")],
            false
        )? == Ok(())
    );
    wait_watermarks(
        &bs,
        &topic,
        0,
        RETENTION_WAIT,
        "retention.ms=1000 set by AlterConfigs",
        |lo, hi| lo == 3 && hi == 3,
    )?;

    // And after another restart the log start is where retention left it.
    let status = broker.terminate()?;
    ensure!(status.success(), "second SIGTERM exit {status}");
    broker.restart()?;
    ensure!(
        low_high(&bs, &topic, 0)? == (3, 3),
        "after restart: {:?}",
        low_high(&bs, &topic, 0)?
    );
    let status = broker.terminate()?;
    ensure!(status.success(), "third SIGTERM exit {status}");
    Ok(())
}

/// A numeric value with surrounding blanks (as a script might send it) is either refused
/// or applied: AlterConfigs must not accept `max.message.bytes=" 20000"` and then go on
/// accepting 30 kB records. (Kafka trims numeric config values and enforces them.)
#[test]
fn padded_numeric_config_values_are_applied_or_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = start_broker(dir.path(), |_| {})?;
    let bs = broker.bootstrap();
    for padded in [" 20000", "20000 "] {
        let topic = topic_name("padded");
        create_topic(&bs, &topic, 1)?;
        let (code, message) = raw::alter_topic_configs(
            broker.addr(),
            &topic,
            &[("max.message.bytes", padded)],
            false,
        )?;
        ensure!(
            code == 0 || code == raw::INVALID_CONFIG,
            "AlterConfigs max.message.bytes={padded:?}: error {code} ({message:?})"
        );
        let shown = config_value(&bs, &topic, "max.message.bytes")?;
        // Accepted means applied: the answer and the effect must agree.
        let applied = code == 0;
        ensure!(
            applied == (shown.as_deref().map(str::trim) == Some("20000")),
            "AlterConfigs answered {code} but DescribeConfigs shows {shown:?}"
        );
        let d = produce_one(&bs, &topic, 30_000)?;
        if applied {
            ensure!(
                too_large(&d),
                "max.message.bytes={padded:?} accepted (DescribeConfigs shows {shown:?}) but a 30 kB record was stored: {d:?}"
            );
        } else {
            ensure!(
                shown.as_deref() == Some("1048588"),
                "refused, yet shows {shown:?}"
            );
            ensure!(d.error.is_none(), "limit unchanged, yet {d:?}");
        }
    }
    broker.shutdown()
}
