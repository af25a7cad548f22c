//! The process figures every Prometheus exporter reports (memory, descriptors, CPU time, start
//! time), read from Linux's `/proc/self` when the metrics page is rendered: nothing is sampled
//! or kept between scrapes, so they cost nothing while nobody asks.

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading of the process's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`.
    pub max_fds: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/self/fd` and `/proc/stat`; `None` where `/proc` is not
    /// mounted (the metrics page then leaves the process figures out).
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count().saturating_sub(1) as u64) // the directory handle itself
            .unwrap_or(0);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| max_open_files(&s))
            .unwrap_or(0);
        parse_stat(&stat, ticks_per_second(), page_size(), boot).map(|mut s| {
            s.open_fds = open_fds;
            s.max_fds = max_fds;
            s
        })
    }
}

/// The fields of a `/proc/<pid>/stat` line that the figures need (the rest are 0).
fn parse_stat(line: &str, ticks: u64, page: u64, boot_secs: Option<u64>) -> Option<ProcessStats> {
    // The command name is in parentheses and may contain spaces or ')': fields start after the
    // last ')'. Then field 3 (state) is the first; utime is field 14, stime 15, starttime 22,
    // vsize 23, rss 24 (proc(5)).
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = ticks.max(1) as f64;
    let start_ticks = field(22)?;
    let start_time_seconds = match boot_secs {
        Some(boot) => boot as f64 + start_ticks as f64 / ticks,
        // Without /proc/stat the uptime-based figure is unknowable; the scrape time is wrong in
        // a way a dashboard notices, unlike 0.
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    };
    Some(ProcessStats {
        resident_bytes: field(24)?.saturating_mul(page),
        virtual_bytes: field(23)?,
        open_fds: 0,
        max_fds: 0,
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
        start_time_seconds,
    })
}

/// The soft limit of the "Max open files" row of `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let row = limits.lines().find(|l| l.starts_with("Max open files"))?;
    row["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parens() {
        // pid (comm) state ppid ... ; utime=150 stime=50 starttime=1000 vsize=8192000 rss=300
        let mut f = vec!["0"; 50];
        f[14 - 3] = "150";
        f[15 - 3] = "50";
        f[22 - 3] = "1000";
        f[23 - 3] = "8192000";
        f[24 - 3] = "300";
        let line = format!("42 (a b) c)) {}", f.join(" "));
        let s = parse_stat(&line, 100, 4096, Some(1_700_000_000)).unwrap();
        assert_eq!(s.cpu_seconds, 2.0);
        assert_eq!(s.resident_bytes, 300 * 4096);
        assert_eq!(s.virtual_bytes, 8_192_000);
        assert_eq!(s.start_time_seconds, 1_700_000_010.0);
        assert!(parse_stat("garbage", 100, 4096, None).is_none());
    }

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read().unwrap();
        assert!(s.resident_bytes > 1 << 20, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(s.open_fds >= 3 && s.open_fds <= s.max_fds, "{s:?}");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(max_open_files(limits), Some(20_000));
    }
}
