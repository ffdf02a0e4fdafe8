//! The open-file limit: each connection is one socket, so it bounds the clients one perf process
//! can hold (here the hard limit is 20,000; more clients need several processes).

/// File descriptors kept back for stdio, the runtime's epoll and timer fds, the JSON file.
pub const RESERVED: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard one and returns the soft limit now in force.
pub fn raise() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    // `rlim_t` is u64 on Linux but not on every target.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

/// How many clients fit under `limit` open files.
pub fn max_clients(limit: u64) -> u64 {
    limit.saturating_sub(RESERVED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_reports_a_usable_limit() {
        let lim = raise().unwrap();
        assert!(lim > RESERVED);
        // Idempotent.
        assert_eq!(raise().unwrap(), lim);
        assert_eq!(max_clients(20_000), 19_936);
        assert_eq!(max_clients(10), 0);
    }
}
