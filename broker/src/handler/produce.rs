//! Produce (key 0): validate and append each partition's batches, then answer once the
//! data is written (acks=1) or durable (acks=all); acks=0 gets no answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use strata_storage::{batch, AppendOutcome, StorageError, Store};

use super::{str_bytes, Ctx, Reply, Response, Session};
use crate::auth::{authorize, op, Resource};
use crate::error::{code, storage_code};
use crate::topic_policy::{Refused, TopicPolicy};

/// `acks` values Kafka accepts; anything else is INVALID_REQUIRED_ACKS.
const INVALID_REQUIRED_ACKS: i16 = 21;
/// Floor for the time an acks=all request waits for its sync: a client timeout of 0 would
/// otherwise fail every request.
const MIN_DURABILITY_WAIT: Duration = Duration::from_millis(100);

type PartitionResult = Result<AppendOutcome, Refused>;

pub async fn handle(
    ctx: &Arc<Ctx>,
    session: &Session,
    version: i16,
    req: ProduceRequest,
    frame_len: usize,
) -> Reply {
    let acks = req.acks;
    if !matches!(acks, -1..=1) {
        return respond(version, &req, |_, _| {
            Err(Refused::from((
                INVALID_REQUIRED_ACKS,
                format!("acks={acks} is not one of -1, 0, 1"),
            )))
        })
        .into();
    }
    let transactional = req.transactional_id.is_some();
    // WRITE on the topic, checked before anything else about it (as Kafka does: an
    // unauthorized client learns nothing, not even whether the topic exists); then what the
    // topic's configs ask of its batches (`None`: no such topic, which the append reports).
    let topics: Vec<(bool, Option<TopicPolicy>)> = req
        .topic_data
        .iter()
        .map(|t| {
            let allowed = authorize(ctx, session, op::WRITE, Resource::Topic(&t.name));
            let policy = ctx
                .store
                .with_topic_configs(&t.name, |c| TopicPolicy::from_configs(c, &ctx.config));
            (allowed, policy)
        })
        .collect();
    // Appends run right here on the connection's task, not on the blocking pool: an append
    // is a memtable insert plus a buffered write() of the WAL (no fsync; the syncer does
    // that), a few microseconds per batch. Handing each request to another thread cost more
    // than the append itself and, with many small requests (linger.ms=0), saturated a core
    // on context switches. RocksDB may briefly delay writes when memtables pile up; that
    // back-pressure then reaches the producer, as it should. Requests to topics that
    // recompress batches or check their keys are the exception: that costs milliseconds of
    // CPU per batch, which must not stall the other connections of this thread.
    let inspects = topics
        .iter()
        .any(|(allowed, p)| *allowed && p.is_some_and(|p| p.inspects_batches()));
    let (req, results) = if inspects {
        // Never closed, so acquiring only waits.
        let _slot = crate::topic_policy::INSPECTING.acquire().await;
        let store = ctx.store.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let results = append_all(&store, &req, &topics, transactional);
            (req, results)
        })
        .await;
        match appended {
            Ok(done) => done,
            Err(e) => return Reply::Close(format!("produce task failed: {e}")),
        }
    } else {
        let results = append_all(&ctx.store, &req, &topics, transactional);
        (req, results)
    };
    keep_cache_honest(ctx, &req, &results, frame_len);
    // Per-partition ingress caps: the data is in; a partition over its cap throttles.
    let mut capped = Duration::ZERO;
    for (topic, results) in req.topic_data.iter().zip(&results) {
        let mut info = None;
        for (part, result) in topic.partition_data.iter().zip(results) {
            if let Some(o) = result.as_ref().ok().filter(|o| !o.duplicate) {
                let bytes = part.records.as_ref().map_or(0, Bytes::len);
                let records = o.last_offset - o.base_offset + 1;
                crate::metrics::produced(&topic.name, bytes, records);
                if let Some(i) = info.get_or_insert_with(|| ctx.store.topic(&topic.name)) {
                    let t = ctx.quotas.partitions.ingress(
                        (i.id, &i.name),
                        &i.configs,
                        part.index,
                        bytes,
                        records,
                    );
                    capped = capped.max(t);
                }
            }
        }
    }
    if acks == 0 {
        session.quota.mute.extend(capped);
        return Reply::None;
    }
    let throttle_ms = crate::quota::enforce::millis(capped);
    if acks == 1 || !ctx.config.fsync {
        return respond(version, &req, |t, p| results[t][p].clone())
            .with_throttle_time_ms(throttle_ms)
            .into();
    }
    let ctx = ctx.clone();
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64).max(MIN_DURABILITY_WAIT);
    let appended = std::time::Instant::now();
    Reply::Later(Box::pin(async move {
        let mut results = results;
        for (t, topic) in req.topic_data.iter().enumerate() {
            for (i, part) in topic.partition_data.iter().enumerate() {
                if let Ok(outcome) = &results[t][i] {
                    let hw = ctx
                        .store
                        .wait_for_high_watermark(
                            &topic.name,
                            part.index,
                            outcome.last_offset,
                            timeout,
                        )
                        .await;
                    if !matches!(hw, Ok(hw) if hw > outcome.last_offset) {
                        results[t][i] = Err(Refused::from((
                            code::REQUEST_TIMED_OUT,
                            "the write was not made durable in time".into(),
                        )));
                    }
                }
            }
        }
        ::metrics::histogram!("strata_produce_durable_seconds")
            .record(appended.elapsed().as_secs_f64());
        Response::from(
            respond(version, &req, |t, p| results[t][p].clone()).with_throttle_time_ms(throttle_ms),
        )
    }))
}

/// Appends every partition's records of the request; results in request order.
fn append_all(
    store: &Store,
    req: &ProduceRequest,
    topics: &[(bool, Option<TopicPolicy>)],
    transactional: bool,
) -> Vec<Vec<PartitionResult>> {
    req.topic_data
        .iter()
        .zip(topics)
        .map(|(t, (allowed, policy))| {
            t.partition_data
                .iter()
                .map(|p| {
                    if !allowed {
                        return Err(Refused::from((
                            code::TOPIC_AUTHORIZATION_FAILED,
                            format!("not authorized to write to topic {}", &*t.name),
                        )));
                    }
                    if let Some(policy) = policy {
                        policy.check_acks(req.acks)?;
                    }
                    let records = p.records.as_ref();
                    let partition = (&t.name[..], p.index);
                    append_partition(store, partition, records, transactional, policy.as_ref())
                })
                .collect()
        })
        .collect()
}

/// Appends every batch of one partition's records, in order, all or none: the storage
/// validates the whole payload (each batch, and producer sequences across them) before it
/// appends any of it, so a request answered with an error has written nothing.
/// Batches are first recompressed or checked as the topic's `policy` asks.
fn append_partition(
    store: &Store,
    (topic, partition): (&str, i32),
    records: Option<&Bytes>,
    transactional: bool,
    policy: Option<&TopicPolicy>,
) -> PartitionResult {
    let fail = |e: StorageError| (storage_code(&e), e.to_string());
    if transactional {
        return Err(Refused::from((
            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "transactions are not supported".into(),
        )));
    }
    let records = records.cloned().unwrap_or_default();
    let batches = batch::split(&records).map_err(fail)?;
    if batches.is_empty() {
        return Err(Refused::from((
            code::CORRUPT_MESSAGE,
            "the request holds no record batch".into(),
        )));
    }
    for b in &batches {
        let h = batch::read_header(b).map_err(fail)?;
        if h.is_transactional() || h.is_control() {
            return Err(Refused::from((
                code::INVALID_REQUEST,
                "transactional and control batches are not supported".into(),
            )));
        }
    }
    // Slices of the request's buffer (the storage may keep them in the read cache uncopied),
    // or the batches recompressed for the topic.
    let batches = batches
        .iter()
        .map(
            |b| match policy.map(|p| p.apply(b)).transpose()?.flatten() {
                Some(rewritten) => Ok(Bytes::from(rewritten)),
                None => Ok(records.slice_ref(b)),
            },
        )
        .collect::<Result<Vec<Bytes>, Refused>>()?;
    store
        .append_batches(topic, partition, &batches)
        .map_err(|e| {
            if !matches!(e, StorageError::OutOfOrderSequence { .. }) {
                tracing::debug!(topic, partition, error = %e, "append refused");
            }
            Refused::from(fail(e))
        })
}

/// KIP-467's per-record errors.
fn record_errors(r: &Refused) -> Vec<BatchIndexAndErrorMessage> {
    r.record_errors
        .iter()
        .map(|&i| {
            BatchIndexAndErrorMessage::default()
                .with_batch_index(i)
                .with_batch_index_error_message(Some(StrBytes::from_static_str(r.record_error)))
        })
        .collect()
}

/// Builds the response in request order from a result per (topic index, partition index).
fn respond(
    version: i16,
    req: &ProduceRequest,
    result: impl Fn(usize, usize) -> PartitionResult,
) -> ProduceResponse {
    let topics = req
        .topic_data
        .iter()
        .enumerate()
        .map(|(t, topic)| {
            let parts = topic
                .partition_data
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let base = PartitionProduceResponse::default().with_index(p.index);
                    match result(t, i) {
                        Ok(o) => base
                            .with_base_offset(o.base_offset)
                            .with_log_append_time_ms(o.log_append_time.unwrap_or(-1))
                            .with_log_start_offset(o.log_start_offset),
                        Err(r) => base
                            .with_error_code(r.code)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1)
                            .with_record_errors(if version >= 8 {
                                record_errors(&r)
                            } else {
                                Vec::new()
                            })
                            .with_error_message((version >= 8).then(|| str_bytes(r.message))),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name.clone())
                .with_topic_id(topic.topic_id)
                .with_partition_responses(parts)
        })
        .collect();
    ProduceResponse::default().with_responses(topics)
}

/// Produce v0-v2 (which the codec does not decode): answers UNSUPPORTED_VERSION for every
/// partition, so a client that chose those versions gets a clear error. Encoded by hand:
/// request header v1 then `acks i16, timeout i32, [topic string, [partition i32, bytes]]`;
/// response header v0 then `[topic, [partition, error i16, base offset i64, (v2: append
/// time i64)]], (v1+: throttle i32)`. `None` when the frame does not parse.
pub fn legacy_error_response(version: i16, correlation_id: i32, frame: &Bytes) -> Option<Bytes> {
    fn string(b: &mut Bytes) -> Option<Bytes> {
        let n = b.try_get_i16().ok()?;
        if n < 0 {
            return Some(Bytes::new());
        }
        (b.remaining() >= n as usize).then(|| b.split_to(n as usize))
    }
    let mut b = frame.clone();
    b.advance(8.min(b.len()));
    string(&mut b)?; // client id
    b.try_get_i16().ok()?; // acks
    b.try_get_i32().ok()?; // timeout
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id);
    let topics = b.try_get_i32().ok()?;
    out.put_i32(topics.max(0));
    for _ in 0..topics.max(0) {
        let name = string(&mut b)?;
        out.put_i16(name.len() as i16);
        out.put_slice(&name);
        let parts = b.try_get_i32().ok()?;
        out.put_i32(parts.max(0));
        for _ in 0..parts.max(0) {
            out.put_i32(b.try_get_i32().ok()?);
            let n = b.try_get_i32().ok()?.max(0) as usize;
            if b.remaining() < n {
                return None;
            }
            b.advance(n);
            out.put_i16(code::UNSUPPORTED_VERSION);
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Some(out.freeze())
}

/// Appended batches stay in the read cache as slices of the request frame they came in (no
/// copy on the write path), and a slice keeps its whole frame alive. That is fine when the
/// appended records are most of the frame, as in every client's produce requests; but a
/// frame that is mostly something else (say 100 MiB of padding, or of batches that were
/// refused, around one small valid batch) would pin far more memory than the cache counts.
/// So when what was appended is less than half of the frame, the cache gets copies of it:
/// at most half a frame is copied, and only for such odd requests.
fn keep_cache_honest(
    ctx: &Ctx,
    req: &ProduceRequest,
    results: &[Vec<PartitionResult>],
    frame_len: usize,
) {
    let appended = |f: &mut dyn FnMut(&str, i32, &AppendOutcome, usize)| {
        for (t, topic) in req.topic_data.iter().enumerate() {
            for (i, part) in topic.partition_data.iter().enumerate() {
                if let (Some(Ok(o)), Some(r)) = (results[t].get(i), &part.records) {
                    if !o.duplicate {
                        f(&topic.name, part.index, o, r.len());
                    }
                }
            }
        }
    };
    let mut total = 0usize;
    appended(&mut |_, _, _, len| total += len);
    if total.saturating_mul(2) >= frame_len {
        return;
    }
    appended(&mut |topic, partition, o, _| {
        if let Err(e) = ctx
            .store
            .detach_cached(topic, partition, o.base_offset, o.last_offset)
        {
            tracing::debug!(topic, partition, error = %e, "could not detach cached batches");
        }
    });
}
