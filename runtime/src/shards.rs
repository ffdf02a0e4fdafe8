//! One executor per shard, each pinned to a CPU the process may run on.

use std::future::Future;
use std::io;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

/// Memory glommio registers with io_uring per executor. We do no file I/O, so the minimum
/// keeps locked memory (`RLIMIT_MEMLOCK`, often 8 MiB for non-root) well within limits.
const IO_MEMORY: usize = 64 * 1024;

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

/// Running shards of one role.
pub struct Shards {
    handles: Vec<ExecutorJoinHandle<()>>,
}

impl Shards {
    /// Starts `count` executors named `name-N`; shard `i` runs `f(i)`.
    pub fn spawn<F, Fut>(name: &str, count: usize, pin: bool, f: F) -> io::Result<Shards>
    where
        F: FnOnce(usize) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let cpus = allowed_cpus();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count {
            let placement = if pin && !cpus.is_empty() {
                Placement::Fixed(cpus[i % cpus.len()])
            } else {
                Placement::Unbound
            };
            let f = f.clone();
            let h = LocalExecutorBuilder::new(placement)
                .name(&format!("{name}-{i}"))
                .io_memory(IO_MEMORY)
                .spawn(move || f(i))
                .map_err(|e| io::Error::other(format!("starting {name} shard {i}: {e}")))?;
            handles.push(h);
        }
        Ok(Shards { handles })
    }

    /// Waits for every shard to finish.
    pub fn join(self) -> io::Result<()> {
        for h in self.handles {
            h.join()
                .map_err(|e| io::Error::other(format!("shard failed: {e}")))?;
        }
        Ok(())
    }
}
