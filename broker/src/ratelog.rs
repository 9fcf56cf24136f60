//! Log lines a remote peer can cause (refused, failed or malformed connections), at most
//! one per source address a minute, so a flood from one host cannot flood the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Per source: when it was last logged, and lines held back since then. At most
/// `MAX_SOURCES` sources are remembered (then the memory starts over).
#[derive(Default)]
pub struct RateLog {
    last: Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl RateLog {
    const EVERY: Duration = Duration::from_secs(60);
    const MAX_SOURCES: usize = 10_000;

    /// `Some(lines held back since this source's last line)` when it may be logged now.
    pub fn allow(&self, ip: IpAddr) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() >= Self::MAX_SOURCES && !last.contains_key(&ip) {
            last.clear();
        }
        match last.get_mut(&ip) {
            Some(entry) if now.duration_since(entry.0) < Self::EVERY => {
                entry.1 += 1;
                None
            }
            Some(entry) => {
                let suppressed = entry.1;
                *entry = (now, 0);
                Some(suppressed)
            }
            None => {
                last.insert(ip, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_then_silence() {
        let log = RateLog::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "::1".parse().unwrap());
        assert_eq!(log.allow(a), Some(0));
        assert_eq!(log.allow(a), None);
        assert_eq!(log.allow(a), None);
        assert_eq!(log.allow(b), Some(0), "another source has its own line");
        // A minute later the held-back count comes with the next line.
        log.last.lock().unwrap().get_mut(&a).unwrap().0 -= RateLog::EVERY;
        assert_eq!(log.allow(a), Some(2));
    }
}
