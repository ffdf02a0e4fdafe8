//! Rings each connection's bell when its next send is due, from one OS thread.
//!
//! Why not a tokio timer per connection: tokio's timer wheel has 1 ms resolution and rounds up,
//! so every send would leave 0-1 ms late, and since latency is measured from the intended time
//! (as it must be, see `schedule`), that lateness would be charged to the server: on a local
//! run whose real latency is a millisecond or two it is most of the figure. A thread sleeping
//! with 1 µs timer slack wakes within tens of microseconds of each slot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use crate::clock;
use crate::schedule::Schedule;

/// Longest single sleep, so a stop request is noticed promptly.
const MAX_NAP: Duration = Duration::from_millis(20);
/// Timer slack for the pacer thread, ns (the Linux default is 50 µs).
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// One bell per connection, rung by the pacer; connection `i` waits on `bells[i]`.
pub type Bells = Arc<[Notify]>;

pub fn bells(clients: usize) -> Bells {
    (0..clients).map(|_| Notify::new()).collect()
}

/// The running pacer thread; it ends by itself after the last slot, or on [`Pacer::stop`].
pub struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pacer {
    /// Walks `schedule`'s slots from `start_ns` (shared clock), ringing each slot's bell once
    /// its time has come. Several slots due at once are rung together.
    pub fn spawn(schedule: Schedule, start_ns: u64, bells: Bells) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("perf-pacer".into())
            .spawn(move || {
                // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack. Failing is
                // harmless (the default slack is 50 µs), so the result is ignored.
                unsafe {
                    libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0);
                }
                for g in 0..schedule.total() {
                    let (client, at) = schedule.slot(g);
                    if !wait_until(start_ns + at, &flag) {
                        return;
                    }
                    if let Some(bell) = bells.get(client) {
                        bell.notify_one();
                    }
                }
            })?;
        Ok(Pacer {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops ringing and waits for the thread (at most [`MAX_NAP`]).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps until `ns` on the shared clock; `false` if told to stop first.
fn wait_until(ns: u64, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = clock::now_ns();
        if now >= ns {
            return true;
        }
        std::thread::sleep(Duration::from_nanos(ns - now).min(MAX_NAP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_every_clients_bell_on_time_and_stops() {
        // 4 clients at 400/s for 50 ms: 20 slots, 5 per client, one every 2.5 ms.
        let schedule = Schedule::new(400.0, 4, Duration::ZERO, Duration::from_millis(50));
        let bells = bells(4);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let start = clock::now_ns() + 5_000_000;
        let pacer = Pacer::spawn(schedule.clone(), start, bells.clone()).unwrap();
        rt.block_on(async {
            for (c, bell) in bells.iter().enumerate() {
                // The first ring comes no earlier than the client's first slot.
                bell.notified().await;
                assert!(clock::now_ns() >= start + schedule.offset_ns(c, 0));
            }
        });
        pacer.stop();

        // Stopping a pacer whose slots lie far ahead returns promptly.
        let far = Pacer::spawn(schedule, clock::now_ns() + 3_600_000_000_000, bells).unwrap();
        let t = std::time::Instant::now();
        far.stop();
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
