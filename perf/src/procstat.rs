//! A server process's resource use read from `/proc`: CPU time (user + system), resident memory
//! and open files. Parsing is pure so it is tested on captured text.

use std::path::Path;

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcSample {
    /// utime + stime, nanoseconds.
    pub cpu_ns: u64,
    /// VmRSS, bytes.
    pub rss_bytes: u64,
    /// Entries in `/proc/PID/fd`.
    pub open_files: u64,
}

/// Reads a sample of `pid`; `None` if the process is gone or `/proc` is unreadable.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let ticks = cpu_ticks(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(ProcSample {
        cpu_ns: ticks.saturating_mul(1_000_000_000) / hz,
        rss_bytes: rss_bytes(&status)?,
        open_files: std::fs::read_dir(dir.join("fd")).ok()?.count() as u64,
    })
}

/// utime + stime in clock ticks from the text of `/proc/PID/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from the last `)`.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": field 3 (state) is index 0, utime (14) index 11, stime (15) index 12.
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in bytes from the text of `/proc/PID/status`.
pub fn rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 37 5 0 0 20 0 1 0 99 \
                    1000 200 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(42));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_from_status() {
        let status = "Name:\tgateway\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(rss_bytes(status), Some(5120 * 1024));
        assert_eq!(rss_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let s = sample(std::process::id()).expect("own /proc entry");
        assert!(s.rss_bytes > 0 && s.open_files > 0);
    }
}
