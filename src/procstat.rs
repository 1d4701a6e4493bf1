//! CPU time, memory, threads and open files of a process, from `/proc`.
//! Used by telemetry (our own process), and by the benchmark and the soak
//! of `tools` (the camera's).
//!
//! Owns: reading `/proc`. Must not touch: anything else; it has no state.

use std::time::Duration;

/// One reading of a process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Reads `/proc/{pid}/stat`, `status` and `fd`; `pid` may be `"self"`.
pub fn read(pid: &str) -> std::io::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("malformed /proc stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at index 11 and 12 after the name.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| std::io::Error::other("short /proc stat"))?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    let threads = fields.get(17).and_then(|f| f.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Ok(Usage {
        cpu: Duration::from_micros(ticks * 1_000_000 / clock_ticks_per_second()),
        rss_bytes: rss_kib * 1024,
        threads,
        open_fds,
    })
}

/// CPU use between two readings `wall` apart, in % of one core.
pub fn cpu_percent(before: &Usage, after: &Usage, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    after.cpu.saturating_sub(before.cpu).as_secs_f64() * 100.0 / wall.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_readable() {
        let usage = read("self").unwrap();
        assert!(usage.rss_bytes > 0, "{usage:?}");
        assert!(usage.threads >= 1, "{usage:?}");
        // Standard input, output and error at least.
        assert!(usage.open_fds >= 3, "{usage:?}");
    }

    #[test]
    fn cpu_time_grows_while_we_compute() {
        let before = read("self").unwrap();
        // A clock tick is 10 ms: compute until one is counted, at most 10 s.
        let end = std::time::Instant::now() + Duration::from_secs(10);
        let mut x = 0u64;
        let after = loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
            let now = read("self").unwrap();
            if now.cpu > before.cpu || std::time::Instant::now() > end {
                break now;
            }
        };
        assert!(after.cpu > before.cpu, "{before:?} → {after:?}");
        assert!(cpu_percent(&before, &after, Duration::from_secs(10)) > 0.0);
    }
}
