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

/// The RSS of a process while it held the most connections, settled: the median RSS over the
/// later half of the samples whose open-file count is within 1% (at least 2) of the series'
/// highest (samples in time order). This is the idle plateau of a storm-then-idle run; the
/// peak RSS would also count the connect ramp's and the teardown's transient allocations
/// (thousands of close frames and deregistrations at once), which are not memory *per idle
/// connection*, and the plateau's first half still holds what the servers free once
/// connections have been idle for a while (Connect's gateways park idle sockets after
/// `--park-after-ms`). `None` for an empty series.
pub fn plateau_rss(samples: &[ProcSample]) -> Option<u64> {
    let top = samples.iter().map(|s| s.open_files).max()?;
    let floor = top.saturating_sub((top / 100).max(2));
    let plateau: Vec<u64> = samples
        .iter()
        .filter(|s| s.open_files >= floor)
        .map(|s| s.rss_bytes)
        .collect();
    let mut settled = plateau[plateau.len() / 2..].to_vec();
    settled.sort_unstable();
    settled.get(settled.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rss: u64, open_files: u64) -> ProcSample {
        ProcSample {
            cpu_ns: 0,
            rss_bytes: rss,
            open_files,
        }
    }

    #[test]
    fn plateau_ignores_ramp_and_teardown() {
        // Ramp (fds rising), plateau at ~1,000 fds settling from 520-530 to ~500, teardown
        // spike with fds falling.
        let series = [
            s(100, 10),
            s(300, 500),
            s(530, 1_000),
            s(520, 998),
            s(505, 1_000),
            s(500, 999),
            s(499, 1_000),
            s(502, 1_000),
            s(900, 400),
            s(950, 12),
        ];
        assert_eq!(plateau_rss(&series), Some(500));
        assert_eq!(plateau_rss(&[]), None);
        // Below 200 fds the tolerance is 2 files, not 1%.
        assert_eq!(
            plateau_rss(&[s(7, 50), s(9, 48), s(8, 48), s(100, 47)]),
            Some(9)
        );
    }

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

/// Kernel memory that TCP sockets hold, machine-wide: the slab caches every socket allocates
/// from (`/proc/slabinfo`: active objects x object size) and the TCP buffer pages
/// (`/proc/net/sockstat`). Reading `/proc/slabinfo` needs root; `None` otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelSockets {
    /// TCP sockets in use.
    pub tcp_inuse: u64,
    /// Bytes in the socket slab caches ([`SOCKET_CACHES`]).
    pub slab_bytes: u64,
    /// TCP send and receive buffer memory, bytes.
    pub tcp_buffer_bytes: u64,
}

/// The slab caches a TCP socket allocates from, besides its dentry (192 B here, left out: the
/// other tenants' builds move the dentry cache far more than a run does).
pub const SOCKET_CACHES: [&str; 4] = ["TCP", "sock_inode_cache", "filp", "eventpoll_epi"];

pub fn kernel_sockets() -> Option<KernelSockets> {
    let slab = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let (tcp_inuse, pages) = sockstat_tcp(&sockstat)?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = if page > 0 { page as u64 } else { 4096 };
    Some(KernelSockets {
        tcp_inuse,
        slab_bytes: slab_bytes(&slab, &SOCKET_CACHES),
        tcp_buffer_bytes: pages * page,
    })
}

/// Sum of active objects x object size over the named caches, from `/proc/slabinfo` text.
pub fn slab_bytes(text: &str, caches: &[&str]) -> u64 {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?;
            if !caches.contains(&name) {
                return None;
            }
            let active: u64 = f.next()?.parse().ok()?;
            let _total = f.next()?;
            let size: u64 = f.next()?.parse().ok()?;
            Some(active * size)
        })
        .sum()
}

/// `(inuse, mem pages)` of the `TCP:` line of `/proc/net/sockstat`.
pub fn sockstat_tcp(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |key: &str| -> Option<u64> {
        let i = f.iter().position(|w| *w == key)?;
        f.get(i + 1)?.parse().ok()
    };
    Some((get("inuse")?, get("mem")?))
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    #[test]
    fn parses_slabinfo_and_sockstat() {
        let slab = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> ...\n\
            TCP                   92    143   2368   13    8 : tunables    0    0    0 : slabdata     11     11      0\n\
            eventpoll_epi        995   1856    128   32    1 : tunables    0    0    0 : slabdata     58     58      0\n\
            dentry            648996 650454    192   21    1 : tunables    0    0    0 : slabdata  30974  30974      0\n";
        assert_eq!(slab_bytes(slab, &SOCKET_CACHES), 92 * 2368 + 995 * 128);
        let sockstat =
            "sockets: used 24\nTCP: inuse 2 orphan 0 tw 656 alloc 2 mem 281\nUDP: inuse 0 mem 0\n";
        assert_eq!(sockstat_tcp(sockstat), Some((2, 281)));
        assert_eq!(sockstat_tcp("UDP: inuse 0 mem 0\n"), None);
    }
}
