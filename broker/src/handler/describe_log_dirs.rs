//! DescribeLogDirs (key 35): the data directory as the broker's one log dir, its disk's
//! total and usable bytes, and the size of every partition it holds (all of them, or those
//! asked for; partitions that do not exist are left out, as Kafka leaves out what a broker
//! does not host). Needs DESCRIBE on the cluster.

use std::path::Path;
use std::sync::Arc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::{str_bytes, Ctx, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::code;

/// Kafka's value for volume sizes a broker cannot tell.
const UNKNOWN_VOLUME_BYTES: i64 = -1;

pub fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    if !authorize(ctx, session, op::DESCRIBE, Resource::Cluster) {
        return DescribeLogDirsResponse::default()
            .with_error_code(code::CLUSTER_AUTHORIZATION_FAILED);
    }
    // Every partition of every topic, or the ones asked for that exist.
    let wanted: Vec<(String, Vec<i32>)> = match &req.topics {
        None => ctx
            .store
            .topics()
            .into_iter()
            .map(|t| (t.name, (0..t.partitions).collect()))
            .collect(),
        Some(topics) => topics
            .iter()
            .filter_map(|t| {
                let info = ctx.store.topic(&t.topic)?;
                let mut parts: Vec<i32> = t
                    .partitions
                    .iter()
                    .copied()
                    .filter(|p| (0..info.partitions).contains(p))
                    .collect();
                parts.sort_unstable();
                parts.dedup();
                Some((info.name, parts))
            })
            .collect(),
    };
    let topics = wanted
        .into_iter()
        .filter_map(|(name, parts)| {
            let partitions: Vec<DescribeLogDirsPartition> = parts
                .into_iter()
                .filter_map(|p| {
                    let size: u64 = ctx
                        .store
                        .segments(&name, p)
                        .ok()?
                        .iter()
                        .map(|s| s.bytes)
                        .sum();
                    Some(
                        DescribeLogDirsPartition::default()
                            .with_partition_index(p)
                            .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                            .with_offset_lag(0)
                            .with_is_future_key(false),
                    )
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(str_bytes(name)))
                    .with_partitions(partitions)
            })
        })
        .collect();
    let dir = &ctx.config.data_dir;
    let (total, usable) = volume_bytes(dir);
    let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let result = DescribeLogDirsResult::default()
        .with_error_code(code::NONE)
        .with_log_dir(str_bytes(shown.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total)
        .with_usable_bytes(usable);
    DescribeLogDirsResponse::default().with_results(vec![result])
}

/// The size of the file system holding `dir` and the bytes an unprivileged writer can still
/// use there; Kafka's "unknown" when the file system does not say.
fn volume_bytes(dir: &Path) -> (i64, i64) {
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let bytes =
                |blocks: u64| i64::try_from(blocks.saturating_mul(s.f_frsize)).unwrap_or(i64::MAX);
            (bytes(s.f_blocks), bytes(s.f_bavail))
        }
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "statvfs failed");
            (UNKNOWN_VOLUME_BYTES, UNKNOWN_VOLUME_BYTES)
        }
    }
}
