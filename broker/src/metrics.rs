//! Prometheus metrics (the `metrics` facade and its Prometheus exporter) and the admin HTTP
//! listener that serves them (`admin_listen`): `/metrics`, `/health`, `/ready`.
//!
//! Events are counted where they happen (requests, bytes in and out, syncs, uploads,
//! retention). State (partition offsets and sizes, consumer lag, groups, connections, caches,
//! RocksDB, the archive's backlog) is read when `/metrics` is scraped, so it costs nothing
//! between scrapes and a deleted topic's series disappear (gauges not set for ten minutes are
//! dropped). Every series is listed in the README.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ::metrics::{counter, gauge, histogram};
use kafka_protocol::messages::{ApiKey, ResponseKind};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::handler::Ctx;

/// Histogram buckets of every `_seconds` series: 0.1 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The process's Prometheus recorder, installed on first use. One per process: brokers
/// started in one process (tests) share it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(Duration::from_secs(600)));
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if ::metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only this one's series"
            );
        }
        handle
    })
}

/// Counters the broker keeps itself (read at scrape time).
#[derive(Default)]
pub struct Counters {
    pub connections_open: AtomicU64,
    pub ready: AtomicBool,
}

/// The label of an API (its Kafka name), without allocating per request.
fn api_label(api: ApiKey) -> &'static str {
    static NAMES: OnceLock<HashMap<i16, &'static str>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        crate::protocol::SUPPORTED
            .iter()
            .map(|s| (s.key as i16, &*format!("{:?}", s.key).leak()))
            .collect()
    });
    names.get(&(api as i16)).copied().unwrap_or("Other")
}

/// Counts one answered request, its latency and the error codes in its response.
pub fn observe_request(api: ApiKey, started: Instant, body: &ResponseKind) {
    let api = api_label(api);
    counter!("strata_requests_total", "api" => api).increment(1);
    histogram!("strata_request_duration_seconds", "api" => api)
        .record(started.elapsed().as_secs_f64());
    for_each_error(body, &mut |code| {
        if code != 0 {
            counter!("strata_request_errors_total", "api" => api, "code" => code.to_string())
                .increment(1);
        }
    });
}

/// Calls `f` with every error code of a response (top-level and per topic, partition or
/// group), for the APIs clients use most; others by their top-level code.
fn for_each_error(body: &ResponseKind, f: &mut dyn FnMut(i16)) {
    match body {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| f(p.error_code)),
        ResponseKind::Fetch(r) => {
            f(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| f(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::Metadata(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::OffsetFetch(r) => {
            f(r.error_code);
            r.groups.iter().for_each(|g| f(g.error_code));
        }
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteRecords(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::DescribeGroups(r) => r.groups.iter().for_each(|g| f(g.error_code)),
        ResponseKind::JoinGroup(r) => f(r.error_code),
        ResponseKind::SyncGroup(r) => f(r.error_code),
        ResponseKind::Heartbeat(r) => f(r.error_code),
        ResponseKind::LeaveGroup(r) => f(r.error_code),
        ResponseKind::FindCoordinator(r) => {
            f(r.error_code);
            r.coordinators.iter().for_each(|c| f(c.error_code));
        }
        ResponseKind::InitProducerId(r) => f(r.error_code),
        ResponseKind::ApiVersions(r) => f(r.error_code),
        ResponseKind::ListGroups(r) => f(r.error_code),
        ResponseKind::DescribeCluster(r) => f(r.error_code),
        ResponseKind::OffsetDelete(r) => f(r.error_code),
        ResponseKind::CreatePartitions(r) => r.results.iter().for_each(|t| f(t.error_code)),
        ResponseKind::DeleteGroups(r) => r.results.iter().for_each(|g| f(g.error_code)),
        ResponseKind::AlterConfigs(r) => r.responses.iter().for_each(|c| f(c.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => {
            r.responses.iter().for_each(|c| f(c.error_code))
        }
        ResponseKind::DescribeConfigs(r) => r.results.iter().for_each(|c| f(c.error_code)),
        ResponseKind::DescribeLogDirs(r) => {
            f(r.error_code);
            r.results.iter().for_each(|d| f(d.error_code));
        }
        ResponseKind::DescribeProducers(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| f(p.error_code)),
        ResponseKind::ElectLeaders(r) => {
            f(r.error_code);
            r.replica_election_results
                .iter()
                .flat_map(|t| &t.partition_result)
                .for_each(|p| f(p.error_code));
        }
        ResponseKind::AlterPartitionReassignments(r) => {
            f(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| f(p.error_code));
        }
        ResponseKind::ListPartitionReassignments(r) => f(r.error_code),
        _ => {}
    }
}

/// Bytes and records appended to a topic.
pub fn produced(topic: &str, bytes: usize, records: i64) {
    let topic = topic.to_string();
    counter!("strata_topic_bytes_in_total", "topic" => topic.clone()).increment(bytes as u64);
    counter!("strata_topic_records_in_total", "topic" => topic).increment(records.max(0) as u64);
}

/// Bytes and records sent to consumers from a topic.
pub fn fetched(topic: &str, bytes: usize, records: u64) {
    if bytes == 0 {
        return;
    }
    let topic = topic.to_string();
    counter!("strata_topic_bytes_out_total", "topic" => topic.clone()).increment(bytes as u64);
    counter!("strata_topic_records_out_total", "topic" => topic).increment(records);
}

/// Reads the broker's state into gauges, then renders every series.
pub async fn render(ctx: &Arc<Ctx>) -> String {
    refresh(ctx).await;
    handle().render()
}

async fn refresh(ctx: &Arc<Ctx>) {
    let per_partition = ctx.config.metrics_partition_series;
    let archived = ctx
        .archived
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // Offsets and sizes, and the end of each partition for lag.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for topic in ctx.store.topics() {
        let remote = crate::archive::remote_storage(&topic.configs, &ctx.config);
        let (mut topic_bytes, mut pending_segments, mut pending_bytes) = (0u64, 0u64, 0u64);
        for p in 0..topic.partitions {
            let (Ok(o), Ok(segments)) = (
                ctx.store.offsets(&topic.name, p),
                ctx.store.segments(&topic.name, p),
            ) else {
                continue;
            };
            let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
            topic_bytes += bytes;
            ends.insert((topic.name.clone(), p), o.high_watermark);
            if remote {
                let upto = archived.get(&(topic.id, p)).copied().unwrap_or(0);
                for s in segments
                    .iter()
                    .filter(|s| s.sealed && s.last_offset >= upto)
                {
                    pending_segments += 1;
                    pending_bytes += s.bytes;
                }
            }
            if per_partition {
                let labels = [("topic", topic.name.clone()), ("partition", p.to_string())];
                gauge!("strata_partition_high_watermark", &labels).set(o.high_watermark as f64);
                gauge!("strata_partition_log_start_offset", &labels).set(o.log_start as f64);
                gauge!("strata_partition_log_bytes", &labels).set(bytes as f64);
            }
        }
        let t = topic.name.clone();
        gauge!("strata_topic_log_bytes", "topic" => t.clone()).set(topic_bytes as f64);
        gauge!("strata_topic_partitions", "topic" => t.clone()).set(f64::from(topic.partitions));
        if remote {
            gauge!("strata_archive_pending_segments", "topic" => t.clone())
                .set(pending_segments as f64);
            gauge!("strata_archive_pending_bytes", "topic" => t).set(pending_bytes as f64);
        }
    }
    lag(ctx, &ends, per_partition).await;
    let groups = ctx.groups.list().await;
    let mut by_state: HashMap<&'static str, u64> = HashMap::new();
    for state in [
        "Empty",
        "PreparingRebalance",
        "CompletingRebalance",
        "Stable",
        "Dead",
    ] {
        by_state.insert(state, 0);
    }
    for (name, view) in &groups {
        *by_state.entry(view.state.name()).or_default() += 1;
        gauge!("strata_group_members", "group" => name.clone()).set(view.members.len() as f64);
    }
    for (state, n) in by_state {
        gauge!("strata_groups", "state" => state).set(n as f64);
    }
    gauge!("strata_connections_open")
        .set(ctx.counters.connections_open.load(Ordering::Relaxed) as f64);
    let cache = ctx.store.read_cache_stats();
    counter!("strata_read_cache_hits_total").absolute(cache.hits);
    counter!("strata_read_cache_misses_total").absolute(cache.misses);
    counter!("strata_read_cache_hit_bytes_total").absolute(cache.hit_bytes);
    counter!("strata_read_cache_miss_bytes_total").absolute(cache.miss_bytes);
    gauge!("strata_read_cache_bytes").set(cache.bytes as f64);
    let store = ctx.store.clone();
    if let Ok(e) = tokio::task::spawn_blocking(move || store.engine_stats()).await {
        gauge!("strata_rocksdb_pending_compaction_bytes").set(e.pending_compaction_bytes as f64);
        gauge!("strata_rocksdb_running_compactions").set(e.running_compactions as f64);
        gauge!("strata_rocksdb_write_stopped").set(if e.write_stopped { 1.0 } else { 0.0 });
        gauge!("strata_rocksdb_delayed_write_rate_bytes").set(e.delayed_write_rate as f64);
        gauge!("strata_rocksdb_memtable_bytes").set(e.memtable_bytes as f64);
        gauge!("strata_rocksdb_live_data_bytes").set(e.live_data_bytes as f64);
        gauge!("strata_rocksdb_wal_bytes").set(e.wal_bytes as f64);
    }
}

/// Consumer lag from committed offsets: per group and topic, and per partition.
async fn lag(ctx: &Arc<Ctx>, ends: &HashMap<(String, i32), i64>, per_partition: bool) {
    let store = ctx.store.clone();
    let committed = tokio::task::spawn_blocking(move || {
        let groups = store.groups_with_offsets().unwrap_or_default();
        groups
            .into_iter()
            .map(|g| {
                let offsets = store.fetch_offsets(&g).unwrap_or_default();
                (g, offsets)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (group, offsets) in committed {
        let mut per_topic: HashMap<&str, i64> = HashMap::new();
        for o in &offsets {
            let Some(&end) = ends.get(&(o.topic.clone(), o.partition)) else {
                continue;
            };
            let lag = (end - o.offset).max(0);
            *per_topic.entry(o.topic.as_str()).or_default() += lag;
            if per_partition {
                gauge!(
                    "strata_consumer_lag",
                    "group" => group.clone(),
                    "topic" => o.topic.clone(),
                    "partition" => o.partition.to_string()
                )
                .set(lag as f64);
            }
        }
        for (topic, lag) in per_topic {
            gauge!("strata_consumer_group_lag", "group" => group.clone(), "topic" => topic.to_string())
                .set(lag as f64);
        }
    }
}

/// Admin connections served at once; more are closed at once (a scraper or a health check
/// needs one).
const MAX_ADMIN_CONNECTIONS: usize = 32;

/// Serves the admin endpoints until `cancel`.
pub async fn serve_admin(listener: TcpListener, ctx: Arc<Ctx>, cancel: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "admin listener busy; closing the connection");
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = admin_request(stream, &ctx).await {
                tracing::debug!(%peer, error = %e, "admin request failed");
            }
            drop(slot);
        });
    }
}

/// One HTTP/1.x request (GET or HEAD), one response, then the connection closes.
async fn admin_request(mut stream: TcpStream, ctx: &Arc<Ctx>) -> std::io::Result<()> {
    const MAX_HEAD: usize = 8192;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 || head.len() + n > MAX_HEAD {
                return Err(std::io::Error::other(
                    "incomplete or oversized request head",
                ));
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await;
    match read {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return respond(
                &mut stream,
                "400 Bad Request",
                "text/plain",
                e.to_string().as_bytes(),
                false,
            )
            .await
        }
        Err(_) => return Ok(()),
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD\n",
            false,
        )
        .await;
    }
    match path {
        "/metrics" => {
            let body = render(ctx).await;
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4",
                body.as_bytes(),
                head_only,
            )
            .await
        }
        "/health" => respond(&mut stream, "200 OK", "text/plain", b"ok\n", head_only).await,
        "/ready" if ctx.counters.ready.load(Ordering::Acquire) && !ctx.shutdown.is_cancelled() => {
            respond(&mut stream, "200 OK", "text/plain", b"ready\n", head_only).await
        }
        "/ready" => {
            respond(
                &mut stream,
                "503 Service Unavailable",
                "text/plain",
                b"not ready\n",
                head_only,
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"/metrics, /health, /ready\n",
                head_only,
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

/// Binds the admin listener (`admin_listen`; empty: none).
pub async fn bind_admin(addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("admin_listen {addr:?} resolves to no address"))?;
    Ok(Some(TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on admin address {addr}: {e}")
    })?))
}
