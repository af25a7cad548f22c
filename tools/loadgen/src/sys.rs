//! The operating system edge: descriptor limit, `/proc` samples of a process, socket options
//! socket2 does not offer. The only `unsafe` in the tool lives here.

use std::fs;
use std::io;
use std::os::fd::RawFd;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit read just above; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // rlim_t is narrower than u64 on some 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

/// Lets `bind(127.0.0.x:0)` leave the port choice to `connect`, which picks it per 4-tuple and
/// can reuse TIME_WAIT ports; without it each source address is limited to one ephemeral range
/// for all destinations and back-to-back runs run out of ports.
pub fn set_bind_address_no_port(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller; the option value points to a c_int
    // that lives across the call, and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clock ticks per second, the unit of `utime`/`stime` in `/proc/PID/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// CPU time and resident memory of a process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_secs: f64,
    /// VmRSS in KiB.
    pub rss_kib: u64,
}

/// Which process: ours or a server's.
#[derive(Clone, Copy, Debug)]
pub enum Pid {
    /// `/proc/self`.
    This,
    /// `/proc/N`.
    Other(u32),
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub fn sample(pid: Pid, ticks: u64) -> io::Result<ProcSample> {
    let dir = match pid {
        Pid::This => "/proc/self".to_string(),
        Pid::Other(n) => format!("/proc/{n}"),
    };
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let status = fs::read_to_string(format!("{dir}/status"))?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{dir}: no {what}"));
    let cpu = parse_stat_cpu_ticks(&stat).ok_or_else(|| bad("utime/stime"))?;
    let rss_kib = parse_vmrss_kib(&status).ok_or_else(|| bad("VmRSS"))?;
    Ok(ProcSample {
        cpu_secs: cpu as f64 / ticks as f64,
        rss_kib,
    })
}

/// The sum of [`sample`] over several processes (a proxy and the server behind it count as one).
pub fn sample_all(pids: &[u32], ticks: u64) -> io::Result<ProcSample> {
    let mut sum = ProcSample::default();
    for &pid in pids {
        let s = sample(Pid::Other(pid), ticks)?;
        sum.cpu_secs += s.cpu_secs;
        sum.rss_kib += s.rss_kib;
    }
    Ok(sum)
}

/// CPU seconds all processes on the machine have used since boot (every core, idle and iowait
/// excluded), and the number of cores. Used to tell how busy *other* processes kept the machine
/// during a run, which distorts wall-clock figures on a shared host.
pub fn machine_busy(ticks: u64) -> io::Result<(f64, usize)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let busy = parse_machine_busy_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat: no cpu line"))?;
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Ok((busy as f64 / ticks as f64, cores.max(1)))
}

/// user + nice + system + irq + softirq + steal of the aggregate `cpu` line.
fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = f[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// utime + stime (fields 14 and 15) from a stat line; the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_vmrss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 1";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(287));
        let status = "Name:\tsseloop\nVmPeak:\t  100 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_vmrss_kib(status), Some(5120));
        assert_eq!(parse_vmrss_kib("Name: x\n"), None);
        let stat = "cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 5 0 2 500 3 1 1 2 0 0\n";
        assert_eq!(parse_machine_busy_ticks(stat), Some(10 + 1 + 5 + 2 + 3 + 4));
        assert_eq!(parse_machine_busy_ticks("cpu  1 2\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(Pid::This, clock_ticks()).unwrap();
        assert!(s.rss_kib > 0);
    }
}
