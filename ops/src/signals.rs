//! Signals: `main` blocks SIGTERM and SIGINT before any thread starts (threads inherit the
//! mask), then waits for one with `sigwait`, so no handler ever runs inside a shard.

/// The blocked set, to wait on.
pub struct Blocked(libc::sigset_t);

/// Blocks SIGTERM and SIGINT for this thread and every thread it starts afterwards.
pub fn block() -> Blocked {
    // SAFETY: plain signal-mask calls on a zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        Blocked(set)
    }
}

impl Blocked {
    /// Waits for SIGTERM or SIGINT; returns its name.
    pub fn wait(&self) -> &'static str {
        let mut sig: libc::c_int = 0;
        // SAFETY: waits on the set blocked in `block`.
        unsafe {
            libc::sigwait(&self.0, &mut sig);
        }
        if sig == libc::SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        }
    }
}
