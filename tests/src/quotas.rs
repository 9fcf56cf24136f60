//! Client loads for the quota tests and benchmark: producers and consumers that count what
//! they got done and the throttles librdkafka reported, and the AlterClientQuotas call.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
use kafka_protocol::messages::AlterClientQuotasRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::{consumer_config, noise, producer_config, raw, send};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// (entity type, name or default) pairs.
pub type Ent<'a> = &'a [(&'a str, Option<&'a str>)];

pub fn entry(entity: Ent<'_>, ops: &[(&str, f64, bool)]) -> EntryData {
    EntryData::default()
        .with_entity(
            entity
                .iter()
                .map(|(t, n)| {
                    EntityData::default()
                        .with_entity_type(s(t))
                        .with_entity_name(n.map(s))
                })
                .collect(),
        )
        .with_ops(
            ops.iter()
                .map(|(k, v, remove)| {
                    OpData::default()
                        .with_key(s(k))
                        .with_value(*v)
                        .with_remove(*remove)
                })
                .collect(),
        )
}

/// AlterClientQuotas; the error code of each entry.
pub fn alter(
    stream: &mut TcpStream,
    v: i16,
    entries: Vec<EntryData>,
    validate_only: bool,
) -> Result<Vec<i16>> {
    let req = AlterClientQuotasRequest::default()
        .with_entries(entries)
        .with_validate_only(validate_only);
    let resp = raw::call(stream, v, 7, &req)?;
    Ok(resp.entries.iter().map(|e| e.error_code).collect())
}

/// Counts what a client got done, and the throttles librdkafka reported in its statistics.
#[derive(Default)]
pub struct Meter {
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    pub throttle_events: AtomicI64,
    pub throttle_max_ms: AtomicI64,
    pub throttle_sum_ms: AtomicI64,
}

impl ClientContext for Meter {
    fn stats(&self, stats: Statistics) {
        for b in stats.brokers.values() {
            if let Some(t) = &b.throttle {
                self.throttle_events.fetch_add(t.cnt, Ordering::SeqCst);
                self.throttle_max_ms.fetch_max(t.max, Ordering::SeqCst);
                self.throttle_sum_ms.fetch_add(t.sum, Ordering::SeqCst);
            }
        }
    }
}

impl ConsumerContext for Meter {}

impl ProducerContext for Meter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self
                .bytes
                .fetch_add(m.payload_len() as u64, Ordering::SeqCst),
            Err(_) => self.errors.fetch_add(1, Ordering::SeqCst),
        };
    }
}

/// A producer for the rate tests: a small local queue and few requests in flight, so that
/// requests waiting behind a muted connection stay far below the request timeout (librdkafka
/// does not pause itself on throttle_time_ms; the broker's mute does the pacing).
pub fn metered_config(bootstrap: &str, client_id: &str) -> ClientConfig {
    let mut c = producer_config(bootstrap);
    c.set("client.id", client_id)
        .set("acks", "1")
        .set("linger.ms", "20")
        .set("batch.size", "262144")
        .set("queue.buffering.max.kbytes", "1024")
        .set("max.in.flight.requests.per.connection", "2")
        .set("statistics.interval.ms", "500");
    c
}

/// A producer thread that sends 10 KiB records to `topic` as fast as it may, or paced to
/// `pace` bytes/s, until `stop`.
pub struct Load {
    producer: Arc<ThreadedProducer<Meter>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
    stop: Arc<AtomicBool>,
}

pub const RECORD: usize = 10 * 1024;

impl Load {
    pub fn start(config: &ClientConfig, topic: &str, pace: Option<f64>) -> Result<Load> {
        let producer: Arc<ThreadedProducer<Meter>> =
            Arc::new(config.create_with_context(Meter::default())?);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, halt, topic) = (producer.clone(), stop.clone(), topic.to_string());
        let thread = std::thread::spawn(move || {
            let payload = noise(7, RECORD);
            let started = Instant::now();
            let mut sent = 0f64;
            while !halt.load(Ordering::SeqCst) {
                if let Some(rate) = pace {
                    let due = Duration::from_secs_f64(sent / rate);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait.min(Duration::from_millis(50)));
                        continue;
                    }
                }
                send(&p, BaseRecord::to(&topic).payload(&payload[..]))?;
                sent += RECORD as f64;
            }
            Ok(())
        });
        Ok(Load {
            producer,
            thread: Some(thread),
            stop,
        })
    }

    pub fn meter(&self) -> &Meter {
        self.producer.context()
    }

    pub fn bytes(&self) -> u64 {
        self.meter().bytes.load(Ordering::SeqCst)
    }

    /// Stops sending, waits for outstanding deliveries; (errors, throttle events).
    pub fn finish(mut self) -> Result<(u64, i64)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
        }
        self.producer.flush(Duration::from_secs(60))?;
        let m = self.meter();
        Ok((
            m.errors.load(Ordering::SeqCst),
            m.throttle_events.load(Ordering::SeqCst),
        ))
    }
}

/// Sets (`Some`) or removes (`None`) one quota of one entity.
pub fn set_quota(addr: SocketAddr, entity: Ent<'_>, key: &str, value: Option<f64>) -> Result<()> {
    let mut c = raw::connect(addr)?;
    let op = (key, value.unwrap_or(0.0), value.is_none());
    ensure!(alter(&mut c, 1, vec![entry(entity, &[op])], false)? == [0]);
    Ok(())
}

/// A consumer of `topic` from offset 0 with `client_id`, counting payload bytes.
pub struct Reader {
    pub bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64>>,
}

impl Reader {
    pub fn start(bs: &str, topic: &str, partitions: i32, client_id: &str) -> Result<Reader> {
        let mut config = consumer_config(bs);
        // Responses of at most 256 KiB (one batch of `metered_config`'s producers): a rate
        // measured over a few seconds is not lumpy.
        config
            .set("client.id", client_id)
            .set("statistics.interval.ms", "500")
            .set("max.partition.fetch.bytes", "262144");
        let consumer: BaseConsumer<Meter> = config.create_with_context(Meter::default())?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (bytes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        n.fetch_add(m.payload_len() as u64, Ordering::SeqCst);
                    }
                    Some(Err(e)) => anyhow::bail!("consumer error: {e}"),
                    None => {}
                }
            }
            Ok(consumer.context().throttle_events.load(Ordering::SeqCst) as u64)
        });
        Ok(Reader {
            bytes,
            stop,
            thread,
        })
    }

    /// Stops; the throttle events librdkafka reported.
    pub fn finish(self) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))?
    }
}

/// Per count, how fast it advanced (per second) over `window`, after `warm_up`.
pub fn measure(counts: &[&dyn Fn() -> u64], warm_up: Duration, window: Duration) -> Vec<f64> {
    std::thread::sleep(warm_up);
    let start: Vec<u64> = counts.iter().map(|c| c()).collect();
    let t0 = Instant::now();
    std::thread::sleep(window);
    let secs = t0.elapsed().as_secs_f64();
    counts
        .iter()
        .zip(start)
        .map(|(c, s)| c().saturating_sub(s) as f64 / secs)
        .collect()
}
