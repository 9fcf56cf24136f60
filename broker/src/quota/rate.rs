//! Rates measured the way Kafka's quotas measure them: over a ring of `quota_window_num`
//! samples of `quota_window_size_seconds` each, and a token bucket for mutation quotas.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The sample windows: how many, and how long each lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Windows {
    pub samples: u32,
    pub size: Duration,
}

impl Windows {
    pub fn from_config(c: &crate::config::Config) -> Windows {
        Windows {
            samples: c.quota_window_num,
            size: Duration::from_secs(c.quota_window_size_seconds),
        }
    }

    /// The span every sample together covers: the longest a rate remembers anything, and
    /// the longest throttle the broker asks for.
    pub fn span(&self) -> Duration {
        self.size.saturating_mul(self.samples)
    }

    /// The shortest span a rate is averaged over: all samples but the one being filled. A
    /// client that has just started is measured over this span too, so its first burst is
    /// not mistaken for a high rate (it may send `quota * this` bytes at once).
    fn min_span(&self) -> Duration {
        self.size
            .saturating_mul(self.samples.saturating_sub(1).max(1))
    }
}

/// A sum of recorded values per sample window; [`SampledRate::rate`] is their total over
/// the time the samples span (at least [`Windows::min_span`]).
#[derive(Debug, Default)]
pub struct SampledRate {
    /// (start of the sample, total recorded in it), oldest first.
    samples: VecDeque<(Instant, f64)>,
}

impl SampledRate {
    fn purge(&mut self, w: Windows, now: Instant) {
        while let Some(&(start, _)) = self.samples.front() {
            if now.saturating_duration_since(start) >= w.span() {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// Adds `value` to the current sample (starting a new one when it is full).
    pub fn record(&mut self, w: Windows, now: Instant, value: f64) {
        self.purge(w, now);
        match self.samples.back_mut() {
            Some((start, total)) if now.saturating_duration_since(*start) < w.size => {
                *total += value;
            }
            _ => {
                self.samples.push_back((now, value));
                while self.samples.len() > w.samples.max(1) as usize {
                    self.samples.pop_front();
                }
            }
        }
    }

    /// The measured rate per second, counting `extra` as if recorded now, and the span it was
    /// averaged over.
    pub fn rate_with(&mut self, w: Windows, now: Instant, extra: f64) -> (f64, Duration) {
        self.purge(w, now);
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum::<f64>() + extra;
        let elapsed = self.samples.front().map_or(Duration::ZERO, |(start, _)| {
            now.saturating_duration_since(*start)
        });
        // Pad to whole windows as Kafka does: the span counts at least `samples - 1` full
        // windows, plus the part of the current one already elapsed.
        let size = w.size.as_secs_f64().max(f64::MIN_POSITIVE);
        let full = (elapsed.as_secs_f64() / size).floor();
        let min_full = f64::from(w.samples.saturating_sub(1).max(1));
        let span = if full < min_full {
            elapsed.as_secs_f64() + (min_full - full) * size
        } else {
            elapsed.as_secs_f64()
        };
        let span = span.max(w.min_span().as_secs_f64());
        (total / span, at_most(span, Duration::MAX))
    }

    /// How long a client must pause so that its rate comes back to `quota` (zero when it is
    /// within it), counting `extra` as recorded now; at most the windows' span.
    pub fn throttle(&mut self, w: Windows, now: Instant, quota: f64, extra: f64) -> Duration {
        let (rate, span) = self.rate_with(w, now, extra);
        throttle_for(rate, quota, span, w)
    }

    /// The throttle `value` would call for, recording it only when it calls for none.
    pub fn record_if_within(
        &mut self,
        w: Windows,
        now: Instant,
        quota: f64,
        value: f64,
    ) -> Duration {
        let t = self.throttle(w, now, quota, value);
        if t.is_zero() {
            self.record(w, now, value);
        }
        t
    }

    /// Whether nothing recorded is still inside the windows (the rate is zero).
    pub fn is_idle(&self, w: Windows, now: Instant) -> bool {
        self.samples
            .back()
            .is_none_or(|(start, _)| now.saturating_duration_since(*start) >= w.span())
    }
}

/// Kafka's throttle time: how far the rate is over the quota, as a share of the quota, times
/// the span it was measured over. Capped at the windows' span (a tiny quota would otherwise
/// ask for hours, and the rate forgets everything after one span anyway).
pub fn throttle_for(rate: f64, quota: f64, span: Duration, w: Windows) -> Duration {
    // NaN compares false, so a NaN rate or quota calls for no throttle.
    let over = rate > quota && quota > 0.0;
    if !over {
        return Duration::ZERO;
    }
    at_most((rate - quota) / quota * span.as_secs_f64(), w.span())
}

/// `secs` as a duration, at most `cap` (a huge or non-finite value is `cap`: converting it
/// would panic).
fn at_most(secs: f64, cap: Duration) -> Duration {
    // NaN compares false: it is `cap` too.
    let within = secs < cap.as_secs_f64();
    if !within {
        return cap;
    }
    Duration::from_secs_f64(secs.max(0.0))
}

/// A token bucket: it holds up to `rate * burst` tokens, refills at `rate` per second, and
/// may go into debt by one request. KIP-599 measures partition mutations with one (burst:
/// every window); per-partition caps use one so that clients sharing a partition queue
/// behind each other's debt instead of all waiting out the same excess.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(now: Instant) -> TokenBucket {
        TokenBucket {
            // Filled on first use (see `refill`).
            tokens: f64::INFINITY,
            last: now,
        }
    }

    fn refill(&mut self, burst: Duration, now: Instant, rate: f64) {
        let most = rate * burst.as_secs_f64();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + rate * elapsed).min(most);
        self.last = now;
    }

    /// Takes `n` tokens (zero to look only); returns the time until the bucket is out of
    /// debt (zero when it is not in debt), at most `cap`.
    pub fn take(
        &mut self,
        burst: Duration,
        cap: Duration,
        now: Instant,
        rate: f64,
        n: f64,
    ) -> Duration {
        self.refill(burst, now, rate);
        self.tokens -= n;
        let positive = rate > 0.0;
        if self.tokens >= 0.0 || !positive {
            return Duration::ZERO;
        }
        at_most(-self.tokens / rate, cap)
    }

    pub fn is_idle(&self, w: Windows, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= w.span()
    }
}

/// One measure of usage.
pub enum Meter {
    /// A client quota's: Kafka's sampled rate, and a bucket that bounds bursts.
    Rate(SampledRate, TokenBucket),
    Bucket(TokenBucket),
}

impl Meter {
    pub fn rate(now: Instant) -> Meter {
        Meter::Rate(SampledRate::default(), TokenBucket::new(now))
    }

    pub fn bucket(now: Instant) -> Meter {
        Meter::Bucket(TokenBucket::new(now))
    }

    fn is_idle(&self, w: Windows, now: Instant) -> bool {
        match self {
            Meter::Rate(r, b) => r.is_idle(w, now) && b.is_idle(w, now),
            Meter::Bucket(b) => b.is_idle(w, now),
        }
    }
}

/// Meters by key. One idle for a whole span measures nothing (a new one would measure the
/// same) and is dropped, so their number is bounded by the keys used within one span.
pub struct Meters<K> {
    map: Mutex<(HashMap<K, Meter>, Instant)>,
    pub windows: Windows,
}

impl<K: Hash + Eq + Clone> Meters<K> {
    pub fn new(windows: Windows) -> Meters<K> {
        Meters {
            map: Mutex::new((HashMap::new(), Instant::now())),
            windows,
        }
    }

    /// Runs `f` on the meter of `key` (made by `make` when there is none).
    pub fn with<T>(
        &self,
        key: &K,
        make: fn(Instant) -> Meter,
        f: impl FnOnce(&mut Meter, Windows, Instant) -> T,
    ) -> T {
        let now = Instant::now();
        let w = self.windows;
        let mut guard = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (map, last_sweep) = &mut *guard;
        if now.saturating_duration_since(*last_sweep) >= w.span() {
            map.retain(|_, m| !m.is_idle(w, now));
            *last_sweep = now;
        }
        // The key is cloned only for a new meter (keys hold client names).
        match map.get_mut(key) {
            Some(m) => f(m, w, now),
            None => f(map.entry(key.clone()).or_insert(make(now)), w, now),
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Windows = Windows {
        samples: 11,
        size: Duration::from_secs(1),
    };

    #[test]
    fn a_first_burst_is_averaged_over_ten_windows() {
        let t0 = Instant::now();
        let mut r = SampledRate::default();
        r.record(W, t0, 5_000.0);
        let (rate, span) = r.rate_with(W, t0, 0.0);
        assert_eq!(span, Duration::from_secs(10));
        assert!((rate - 500.0).abs() < 1e-9);
        // Quota 250/s: twice over, so wait as long again as the span: 10 s.
        let t = r.throttle(W, t0, 250.0, 0.0);
        assert!((t.as_secs_f64() - 10.0).abs() < 1e-6, "{t:?}");
        assert_eq!(r.throttle(W, t0, 500.0, 0.0), Duration::ZERO);
    }

    #[test]
    fn old_samples_are_forgotten() {
        let t0 = Instant::now();
        let mut r = SampledRate::default();
        r.record(W, t0, 1e9);
        let later = t0 + Duration::from_secs(12);
        assert!(r.is_idle(W, later));
        assert_eq!(r.rate_with(W, later, 0.0).0, 0.0);
        r.record(W, later, 10.0);
        assert!((r.rate_with(W, later, 0.0).0 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_steady_rate_is_measured_over_the_elapsed_span() {
        let t0 = Instant::now();
        let mut r = SampledRate::default();
        for s in 0..20 {
            r.record(W, t0 + Duration::from_secs(s), 100.0);
        }
        let now = t0 + Duration::from_millis(19_500);
        let (rate, span) = r.rate_with(W, now, 0.0);
        // 11 samples (9..=19) over 10.5 s.
        assert!((span.as_secs_f64() - 10.5).abs() < 1e-9, "{span:?}");
        assert!((rate - 1100.0 / 10.5).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn throttles_are_bounded() {
        assert_eq!(
            throttle_for(1e300, 1e-300, Duration::from_secs(10), W),
            W.span()
        );
        assert_eq!(
            throttle_for(f64::NAN, 1.0, Duration::from_secs(10), W),
            Duration::ZERO
        );
        assert_eq!(
            throttle_for(5.0, 0.0, Duration::from_secs(10), W),
            Duration::ZERO
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_throttles() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0);
        let take =
            |b: &mut TokenBucket, at: Instant, n: f64| b.take(W.span(), W.span(), at, 2.0, n);
        // Rate 2/s over 11 s: a burst of 22.
        assert_eq!(take(&mut b, t0, 22.0), Duration::ZERO);
        assert_eq!(take(&mut b, t0, 0.0), Duration::ZERO);
        let d = take(&mut b, t0, 4.0);
        assert!((d.as_secs_f64() - 2.0).abs() < 1e-9, "{d:?}");
        // Debts add up: the next taker waits for both.
        let d = take(&mut b, t0, 2.0);
        assert!((d.as_secs_f64() - 3.0).abs() < 1e-9, "{d:?}");
        assert_eq!(
            take(&mut b, t0 + Duration::from_secs(3), 0.0),
            Duration::ZERO
        );
        assert_eq!(
            b.take(W.span(), Duration::from_secs(1), t0, 2.0, 1e300),
            Duration::from_secs(1),
            "capped"
        );
    }
}
