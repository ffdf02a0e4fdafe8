//! One executor per shard, each pinned to a CPU the process may run on, on either backend.

use std::future::Future;
use std::io;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::rt::{self, Backend};

/// Memory glommio registers with io_uring per executor. We do no file I/O, so the minimum
/// keeps locked memory (`RLIMIT_MEMLOCK`, often 8 MiB for non-root) well within limits.
const IO_MEMORY: usize = 64 * 1024;

/// io_uring submission queue depth per ring (glommio's default is 128). The kernel sizes a
/// ring's table of cancellable requests from it (2^(log2(completion entries) - 5) buckets,
/// at most 256), and every idle socket keeps a poll request in that table. At glommio's default
/// the table has 8 buckets, so each cancellation (glommio cancels and re-arms its preemption
/// timers on every loop) walks ~1/8 of all connections: the cost of a message grows with the
/// number of idle connections. 4096 gives the maximum of 256 buckets; it also makes glommio's
/// throughput preemption fire after 4096 completions instead of 128 (one task queue per shard,
/// so nothing to be fair to). Overridable for experiments with `CONNECT_URING_DEPTH`.
const RING_DEPTH: usize = 4096;

fn ring_depth() -> usize {
    let Ok(v) = std::env::var("CONNECT_URING_DEPTH") else {
        return RING_DEPTH;
    };
    match v.parse::<usize>() {
        Ok(d) if d > 0 => d,
        _ => {
            tracing::warn!(value = %v, "CONNECT_URING_DEPTH is not a positive integer; using {RING_DEPTH}");
            RING_DEPTH
        }
    }
}

/// CPUs in this process's affinity mask (containers often allow fewer than the host has).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills a zeroed cpu_set_t for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_to(cpu: usize) {
    // SAFETY: sets the calling thread's affinity from a zeroed set with one CPU.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

enum Handle {
    Uring(ExecutorJoinHandle<()>),
    Epoll(std::thread::JoinHandle<()>),
}

/// Running shards of one role.
pub struct Shards {
    handles: Vec<Handle>,
}

impl Shards {
    /// Starts `count` executors named `name-N` on `backend`; shard `i` runs `f(i)`.
    pub fn spawn<F, Fut>(
        name: &str,
        count: usize,
        pin: bool,
        backend: Backend,
        f: F,
    ) -> io::Result<Shards>
    where
        F: FnOnce(usize) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let cpus = allowed_cpus();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let cpu = (pin && !cpus.is_empty()).then(|| cpus[i % cpus.len()]);
            let f = f.clone();
            let thread = format!("{name}-{i}");
            let h = match backend {
                Backend::Uring => {
                    let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
                    LocalExecutorBuilder::new(placement)
                        .name(&thread)
                        .io_memory(IO_MEMORY)
                        .ring_depth(ring_depth())
                        .spawn(move || {
                            rt::set_current(Backend::Uring);
                            f(i)
                        })
                        .map(Handle::Uring)
                        .map_err(|e| io::Error::other(format!("starting {thread}: {e}")))?
                }
                Backend::Epoll => {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    std::thread::Builder::new()
                        .name(thread)
                        .spawn(move || {
                            if let Some(c) = cpu {
                                pin_to(c);
                            }
                            rt::set_current(Backend::Epoll);
                            let local = tokio::task::LocalSet::new();
                            local.block_on(&rt, f(i));
                        })
                        .map(Handle::Epoll)?
                }
            };
            handles.push(h);
        }
        Ok(Shards { handles })
    }

    /// Waits for every shard to finish.
    pub fn join(self) -> io::Result<()> {
        for h in self.handles {
            match h {
                Handle::Uring(h) => h
                    .join()
                    .map_err(|e| io::Error::other(format!("shard failed: {e}")))?,
                Handle::Epoll(h) => h.join().map_err(|_| io::Error::other("shard panicked"))?,
            }
        }
        Ok(())
    }
}
