//! Helpers of the archive tests: topic ids, waiting for the archive, the local log start.

use std::time::Duration;

use anyhow::Result;
use strata_storage::archive::{Archive, ArchiveManifest, PartitionRef};

use crate::{producer_config, raw, recording_producer, wait_until, RecordingProducer};

/// A producer whose batches stay well below a segment (librdkafka would otherwise put the
/// whole test's records in one or two batches, hence one segment).
pub fn small_batch_producer(bs: &str) -> Result<RecordingProducer> {
    let mut cfg = producer_config(bs);
    cfg.set("batch.size", "4096");
    recording_producer(&cfg)
}

/// The topic's id, from Metadata.
pub fn topic_id(bs: &str, topic: &str) -> Result<uuid::Uuid> {
    let addr: std::net::SocketAddr = bs.parse()?;
    let mut c = raw::connect(addr)?;
    let req = kafka_protocol::messages::MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(
            Some(kafka_protocol::messages::TopicName(
                kafka_protocol::protocol::StrBytes::from_string(topic.to_string()),
            )),
        ),
    ]));
    let resp = raw::call(&mut c, 12, 1, &req)?;
    Ok(resp.topics[0].topic_id)
}

/// Waits until the archive holds offsets below `at_least`.
pub fn wait_archived(
    archive: &Archive,
    p: PartitionRef<'_>,
    at_least: i64,
) -> Result<ArchiveManifest> {
    wait_archived_for(archive, p, at_least, Duration::from_secs(60))
}

/// [`wait_archived`], waiting up to `timeout`.
pub fn wait_archived_for(
    archive: &Archive,
    p: PartitionRef<'_>,
    at_least: i64,
    timeout: Duration,
) -> Result<ArchiveManifest> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    wait_until(
        "the archive to catch up",
        timeout,
        Duration::from_millis(100),
        || {
            let m = rt
                .block_on(archive.manifest(p))
                .map_err(|e| e.to_string())?;
            if m.next_offset() >= at_least {
                Ok(m)
            } else {
                Err(format!("archived up to {}", m.next_offset()))
            }
        },
    )
}

/// The local log start of partition 0: ListOffsets EARLIEST_LOCAL (KIP-405, -4), which,
/// unlike EARLIEST, does not reach into the archive.
pub fn local_log_start(bs: &str, topic: &str) -> Result<i64> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut c = raw::connect(bs.parse()?)?;
    let req = kafka_protocol::messages::ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(kafka_protocol::messages::TopicName(
                kafka_protocol::protocol::StrBytes::from_string(topic.to_string()),
            ))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(0)
                .with_timestamp(-4)])]);
    let resp = raw::call(&mut c, 9, 1, &req)?;
    Ok(resp.topics[0].partitions[0].offset)
}

/// Waits until retention has moved the local log start of partition 0 past 0 (dropped
/// archived segments locally); returns it.
pub fn wait_local_log_start_moved(bs: &str, topic: &str) -> Result<i64> {
    wait_until(
        "retention to drop archived segments locally",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || match local_log_start(bs, topic).map_err(|e| e.to_string())? {
            0 => Err("local log start 0".into()),
            n => Ok(n),
        },
    )
}

/// Checks that partition 0 of `topic` starts at offset 0 and ends at `messages`, and that
/// librdkafka reading it from offset 0 gets test messages `0..messages` (values `size`
/// bytes) back intact, wherever they are kept.
pub fn replay_from_zero(bs: &str, topic: &str, messages: u64, size: usize) -> Result<()> {
    let (low, high) = crate::watermarks(bs, topic)?[0];
    anyhow::ensure!(
        low == 0 && high == messages as i64,
        "watermarks {low}..{high}"
    );
    let recs = crate::consume_all(bs, topic, crate::CONSUME_TIMEOUT)?;
    crate::verify_test_messages(&recs, 0..messages, 1, |_| size)
}
