//! Start-up choice of backend: probe io_uring, fall back to epoll where it is denied.

use std::io;
use std::str::FromStr;

use crate::rt::Backend;

/// The `--io` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoMode {
    /// io_uring when the kernel allows it, epoll otherwise.
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// epoll even where io_uring works.
    Epoll,
}

impl FromStr for IoMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(IoMode::Auto),
            "uring" | "io_uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            _ => Err(format!("`{s}`: expected auto, uring or epoll")),
        }
    }
}

/// Whether this process may create an io_uring: `io_uring_setup` with one entry, closed at once.
/// Seccomp profiles that deny it (Fargate's, Docker's default since 2023) answer EPERM; kernels
/// without it ENOSYS.
pub fn io_uring_available() -> io::Result<()> {
    // struct io_uring_params is 120 bytes; zeroed means "no flags".
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the params buffer we pass.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: closing the descriptor the kernel just gave us.
    unsafe {
        libc::close(fd as libc::c_int);
    }
    Ok(())
}

/// Picks the backend for `mode`, with the reason, for the start-up log.
pub fn choose(mode: IoMode) -> Result<(Backend, String), String> {
    match mode {
        IoMode::Epoll => Ok((Backend::Epoll, "--io=epoll".into())),
        IoMode::Uring => match io_uring_available() {
            Ok(()) => Ok((Backend::Uring, "--io=uring".into())),
            Err(e) => Err(format!("--io=uring but io_uring is unavailable: {e}")),
        },
        IoMode::Auto => match io_uring_available() {
            Ok(()) => Ok((Backend::Uring, "io_uring available".into())),
            Err(e) => Ok((Backend::Epoll, format!("io_uring unavailable ({e})"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("auto".parse(), Ok(IoMode::Auto));
        assert_eq!("epoll".parse(), Ok(IoMode::Epoll));
        assert_eq!("uring".parse(), Ok(IoMode::Uring));
        assert!("kqueue".parse::<IoMode>().is_err());
    }

    #[test]
    fn epoll_is_always_possible() {
        assert_eq!(choose(IoMode::Epoll).unwrap().0, Backend::Epoll);
    }
}
