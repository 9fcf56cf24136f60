//! Client quotas over 30 s with Kafka's default windows (11 x 1 s): an in-process broker, a
//! producer with a `producer_byte_rate` quota set at run time next to a neighbour without
//! one, then a consumer with a `consumer_byte_rate` quota next to one without; prints each
//! client's rate over the whole measured span and over its steady part, against the quota.
//!
//! ```text
//! cargo run -p strata-tests --bin quota-bench -- --seconds 30 --quota-mb 1
//! ```
//!
//! Options: `--seconds S` (measured span, default 30), `--quota-mb Q` (default 1),
//! `--neighbour-mb N` (the neighbour producer's own pace, default 3).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use strata_tests::quotas::{metered_config, set_quota, Load, Reader};
use strata_tests::{create_topic, topic_name, InProcessBroker};

const MB: f64 = 1024.0 * 1024.0;

/// Samples `count` every second for `span`; returns (rate over the span, rate over its
/// second half).
fn rate_over(span: Duration, count: &dyn Fn() -> u64) -> (f64, f64) {
    let t0 = Instant::now();
    let c0 = count();
    std::thread::sleep(span / 2);
    let (t1, c1) = (Instant::now(), count());
    std::thread::sleep(span / 2);
    let (t2, c2) = (Instant::now(), count());
    let whole = (c2 - c0) as f64 / (t2 - t0).as_secs_f64();
    let steady = (c2 - c1) as f64 / (t2 - t1).as_secs_f64();
    (whole, steady)
}

fn main() -> Result<()> {
    let (mut seconds, mut quota_mb, mut neighbour_mb) = (30u64, 1.0f64, 3.0f64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => seconds = value()?.parse()?,
            "--quota-mb" => quota_mb = value()?.parse()?,
            "--neighbour-mb" => neighbour_mb = value()?.parse()?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let span = Duration::from_secs(seconds);
    let quota = quota_mb * MB;
    let b = InProcessBroker::start_temp(|_| {})?;
    let bs = b.bootstrap();
    let topic = topic_name("quota-bench");
    create_topic(&bs, &topic, 2)?;

    let slow = Load::start(&metered_config(&bs, "bench-slow"), &topic, None)?;
    let neighbour = Load::start(
        &metered_config(&bs, "bench-neighbour"),
        &topic,
        Some(neighbour_mb * MB),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    set_quota(
        b.addr(),
        &[("client-id", Some("bench-slow"))],
        "producer_byte_rate",
        Some(quota),
    )?;
    let both = std::thread::scope(|s| {
        let n = s.spawn(|| rate_over(span, &|| neighbour.bytes()));
        let slow_rates = rate_over(span, &|| slow.bytes());
        (slow_rates, n.join())
    });
    let ((slow_whole, slow_steady), neighbour_rates) = both;
    let (neighbour_whole, _) = neighbour_rates.map_err(|_| anyhow::anyhow!("thread panicked"))?;
    let throttle_max = slow.meter().throttle_max_ms.load(Ordering::SeqCst);
    let (slow_errors, slow_throttles) = slow.finish()?;
    let (neighbour_errors, neighbour_throttles) = neighbour.finish()?;
    println!(
        "produce: quota {quota_mb:.2} MB/s over {seconds} s (windows 11 x 1 s, quota set at run time)"
    );
    println!(
        "  throttled producer: {:.3} MB/s over {seconds} s ({:+.1}% of quota), {:.3} MB/s over the last {} s; {slow_errors} errors, {slow_throttles} throttle events (max {throttle_max} ms) in librdkafka's statistics",
        slow_whole / MB,
        (slow_whole / quota - 1.0) * 100.0,
        slow_steady / MB,
        seconds / 2
    );
    println!(
        "  neighbour (no quota, paced at {neighbour_mb:.2} MB/s): {:.3} MB/s; {neighbour_errors} errors, {neighbour_throttles} throttle events",
        neighbour_whole / MB
    );

    let fill = Load::start(&metered_config(&bs, "bench-filler"), &topic, None)?;
    let need = (quota * (span.as_secs_f64() + 15.0)) as u64;
    while fill.bytes() < need {
        std::thread::sleep(Duration::from_millis(100));
    }
    fill.finish()?;
    set_quota(
        b.addr(),
        &[("client-id", Some("bench-slow-consumer"))],
        "consumer_byte_rate",
        Some(quota),
    )?;
    let reader = Reader::start(&bs, &topic, 2, "bench-slow-consumer")?;
    let free = Reader::start(&bs, &topic, 2, "bench-free-consumer")?;
    let t0 = Instant::now();
    let (read_whole, read_steady) = rate_over(span, &|| reader.bytes.load(Ordering::SeqCst));
    let free_bytes = free.bytes.load(Ordering::SeqCst);
    let reader_throttles = reader.finish()?;
    free.finish()?;
    println!("fetch: quota {quota_mb:.2} MB/s over {seconds} s");
    println!(
        "  throttled consumer: {:.3} MB/s over {seconds} s from its start ({:+.1}% of quota; includes the first burst of ~10 s of quota that Kafka's windows allow), {:.3} MB/s over the last {} s; {reader_throttles} throttle events",
        read_whole / MB,
        (read_whole / quota - 1.0) * 100.0,
        read_steady / MB,
        seconds / 2
    );
    println!(
        "  neighbour (no quota): read {:.1} MB in {:.1} s",
        free_bytes as f64 / MB,
        t0.elapsed().as_secs_f64()
    );
    b.shutdown()
}
