//! Points in time on the command line: RFC 3339 (`2026-12-05T10:00:00Z`, or without a zone
//! for UTC), relative to now (`-2h`, `-90m`, `-1d12h`), `now`, or milliseconds since the epoch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Milliseconds since the epoch for `text`, relative times counted back from `now`.
pub fn parse_time_at(text: &str, now: SystemTime) -> Result<i64> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("now") {
        return Ok(ms(now));
    }
    if let Some(rel) = t.strip_prefix('-') {
        let d: Duration = humantime::parse_duration(rel)
            .with_context(|| format!("{text:?} is not a relative time like -2h or -30m"))?;
        let at = now
            .checked_sub(d)
            .with_context(|| format!("{text:?} is before the epoch"))?;
        return Ok(ms(at));
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .with_context(|| format!("{text:?} is too large for milliseconds since the epoch"));
    }
    match humantime::parse_rfc3339_weak(t) {
        Ok(at) => Ok(ms(at)),
        Err(_) => match humantime::parse_rfc3339(t) {
            Ok(at) => Ok(ms(at)),
            Err(e) => bail!(
                "{text:?} is not a time: use RFC 3339 (2026-12-05T10:00:00Z), a relative \
                 time (-2h), now, or milliseconds since the epoch ({e})"
            ),
        },
    }
}

pub fn parse_time(text: &str) -> Result<i64> {
    parse_time_at(text, SystemTime::now())
}

fn ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => -(e.duration().as_millis().min(i64::MAX as u128) as i64),
    }
}

/// `ms` since the epoch as RFC 3339 (UTC, milliseconds), or the number if out of range.
pub fn format_ms(ms: i64) -> String {
    if ms < 0 {
        return ms.to_string();
    }
    match UNIX_EPOCH.checked_add(Duration::from_millis(ms as u64)) {
        Some(t) => humantime::format_rfc3339_millis(t).to_string(),
        None => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_relative_and_numeric_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time_at("now", now).unwrap(), 1_000_000_000);
        assert_eq!(
            parse_time_at("-2h", now).unwrap(),
            1_000_000_000 - 7_200_000
        );
        assert_eq!(
            parse_time_at("-1d 12h", now).unwrap(),
            1_000_000_000 - 129_600_000
        );
        assert_eq!(
            parse_time_at("1700000000000", now).unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_at("2026-12-05T10:00:00Z", now).unwrap(),
            1_796_464_800_000
        );
        assert_eq!(
            parse_time_at("2026-12-05T10:00:00", now).unwrap(),
            1_796_464_800_000
        );
        assert_eq!(
            parse_time_at("2026-12-05 10:00:00.250", now).unwrap(),
            1_796_464_800_250
        );
        assert_eq!(format_ms(1_796_464_800_250), "2026-12-05T10:00:00.250Z");
    }

    #[test]
    fn nonsense_is_refused_with_a_hint() {
        let now = SystemTime::now();
        for bad in [
            "",
            "yesterday",
            "-2 fortnights",
            "2026-13-01T00:00:00Z",
            "-999999999999y",
            "99999999999999999999999",
        ] {
            let e = parse_time_at(bad, now).unwrap_err();
            assert!(!format!("{e:#}").is_empty(), "{bad}");
        }
    }
}
