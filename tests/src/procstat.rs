//! Process resource usage from /proc (Linux), for the benchmark's report.

/// Clock ticks per second for /proc/<pid>/stat times. Linux reports USER_HZ, which is 100 on
/// every mainstream architecture; reading sysconf would need libc (and `unsafe`).
const USER_HZ: f64 = 100.0;

/// A numeric field of /proc/<pid>/status: `Vm*` fields in KiB (e.g. "VmHWM", "VmRSS"),
/// counts as they are ("Threads").
pub fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Memory of this process: (current RSS, peak RSS) in KiB.
pub fn self_rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some((
        status_field_kib(&status, "VmRSS")?,
        status_field_kib(&status, "VmHWM")?,
    ))
}

/// CPU time of this process so far: (user seconds, system seconds).
pub fn self_cpu_seconds() -> Option<(f64, f64)> {
    cpu_seconds("self")
}

/// CPU time of process `pid` ("self" for this one): (user seconds, system seconds).
pub fn cpu_seconds(pid: &str) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: fields after the
    // last ')' start at field 3 (state); utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime / USER_HZ, stime / USER_HZ))
}

/// CPU seconds (user + system) of this process's live threads whose name passes `keep`
/// (threads that have exited are not counted).
pub fn threads_cpu_seconds(keep: impl Fn(&str) -> bool) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|name| keep(name.trim_end()))
        })
        .filter_map(|t| {
            let tid = t.file_name().into_string().ok()?;
            cpu_seconds(&format!("self/task/{tid}")).map(|(u, s)| u + s)
        })
        .sum()
}

/// Raises this process's soft open-file limit (RLIMIT_NOFILE) to at least `want`, up to
/// the hard limit; children inherit it. Err says why it cannot reach `want` (then a test
/// that needs that many sockets should skip rather than fail on EMFILE).
pub fn raise_open_file_limit(want: u64) -> Result<u64, String> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit: {e}"))?;
    if soft >= want {
        return Ok(soft);
    }
    if hard < want {
        return Err(format!(
            "open-file limit: hard limit {hard} < {want} needed (raise it with `ulimit -Hn` as root)"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).map_err(|e| format!("setrlimit: {e}"))?;
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let s = "Name:\tx\nVmHWM:\t  12345 kB\nVmRSS:\t   999 kB\n";
        assert_eq!(status_field_kib(s, "VmHWM"), Some(12345));
        assert_eq!(status_field_kib(s, "VmRSS"), Some(999));
        assert_eq!(status_field_kib(s, "VmSwap"), None);
    }

    #[test]
    fn reads_own_usage() {
        let (rss, peak) = self_rss_kib().unwrap();
        assert!(rss > 0 && peak >= rss);
        let (user, sys) = self_cpu_seconds().unwrap();
        assert!(user >= 0.0 && sys >= 0.0);
        let all = threads_cpu_seconds(|_| true);
        assert!(
            all >= 0.0 && all <= user + sys + 0.05,
            "{all} vs {user} + {sys}"
        );
        assert_eq!(threads_cpu_seconds(|_| false), 0.0);
    }
}
