//! `perf load`: bring every connection up, start the schedule for all at once, report progress
//! every second, wait out the grace period, stop everything and gather the report.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cli::LoadConfig;
use crate::clock;
use crate::conn::{self, Control, Dial, Ready, Spec, Target};
use crate::pacer::{self, Pacer};
use crate::plan;
use crate::report::{Measured, Tick};
use crate::schedule::Schedule;
use crate::session::Shared;
use crate::stats::Counts;

/// Between announcing the start and the first slot, so every task sees the start in time.
const START_LEAD: Duration = Duration::from_millis(200);
/// How long closing connections may take before their tasks are aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the grace period checks whether everything is in.
const SETTLE_POLL: Duration = Duration::from_millis(50);

/// Who drives this run: the `perf` command itself, or a coordinator (this is one worker of a
/// multi-process run, see `multi`).
pub enum Role {
    Local,
    Worker(crate::multi::WorkerIo),
}

impl Role {
    fn is_local(&self) -> bool {
        matches!(self, Role::Local)
    }
}

pub async fn run(cfg: &LoadConfig, role: Role) -> anyhow::Result<Measured> {
    run_with(cfg, role, None).await
}

/// [`run`], telling `on_start` when the schedule starts (ns on the shared clock), so a caller can
/// time events (faults) against it.
pub async fn run_with(
    cfg: &LoadConfig,
    mut role: Role,
    on_start: Option<std::sync::mpsc::Sender<u64>>,
) -> anyhow::Result<Measured> {
    let targets = resolve(cfg).await?;
    let schedule = Schedule::new(cfg.rate, cfg.clients, cfg.warmup, cfg.duration);
    let shared = Arc::new(Shared {
        schedule,
        stats: Default::default(),
        body_bytes: cfg.body_bytes,
        dialect: cfg.dialect,
        devices: cfg.devices,
        offset: cfg.offset,
        ledger: cfg
            .ledger
            .then(|| std::sync::Mutex::new(vec![None; cfg.clients])),
    });
    let spacing_ns = if cfg.connect_rate > 0.0 {
        (1e9 / cfg.connect_rate) as u64
    } else {
        0
    };
    let dial = Arc::new(Dial {
        timeout: cfg.connect_timeout,
        ws: Dial::ws_config(),
        epoch_ns: clock::now_ns(),
        spacing_ns,
        dialect: cfg.dialect,
        source_ip: cfg.source_ip,
        reconnect: if cfg.reconnect {
            targets.clone()
        } else {
            Vec::new()
        },
    });
    // Tokens outlive the whole run: dialling, warm-up, measuring, grace, plus an hour's slack.
    let run_secs = (spacing_ns as f64 * cfg.clients as f64 / 1e9) as u64
        + (cfg.connect_timeout + cfg.warmup + cfg.duration + cfg.grace).as_secs()
        + 3_600;
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock before 1970")?
        .as_secs();

    let bells = pacer::bells(cfg.clients);
    let (ctrl_tx, ctrl_rx) = watch::channel(Control::Connecting);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    let devices = cfg.devices.max(1);
    for i in 0..cfg.clients {
        let global = cfg.offset + i;
        let user = plan::user(plan::user_of(global, devices));
        let spec = Spec {
            index: i,
            token: auth::dev_token(cfg.secret.as_bytes(), &user, run_secs, now_unix),
            user,
            peer: plan::user(plan::peer(plan::user_of(global, devices))),
            target: targets[plan::gateway(global, targets.len())].clone(),
        };
        tasks.spawn(conn::run(
            spec,
            shared.clone(),
            dial.clone(),
            bells.clone(),
            ctrl_rx.clone(),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);

    let up = connect_all(cfg.clients, &mut ready_rx, &shared, &role).await;
    let connect_phase_ns = clock::now_ns().saturating_sub(dial.epoch_ns);
    let connected = up.iter().filter(|&&u| u).count();
    let scheduled: u64 = (0..cfg.clients)
        .filter(|&i| up[i])
        .map(|i| shared.schedule.sends_for(i))
        .sum();
    let start_ns = match &mut role {
        Role::Local => {
            if connected == 0 {
                let _ = ctrl_tx.send(Control::Stop);
                tasks.shutdown().await;
                bail!(
                    "no connection came up: {:?}",
                    shared.stats.tallies().connect_errors
                );
            }
            eprintln!(
                "perf: {connected}/{} connected in {:.2} s; sending {scheduled} messages over \
                 {:.1} s, one per client every {:.1} ms",
                cfg.clients,
                connect_phase_ns as f64 / 1e9,
                shared.schedule.end_ns() as f64 / 1e9,
                shared.schedule.client_interval_ns() as f64 / 1e6
            );
            clock::now_ns() + START_LEAD.as_nanos() as u64
        }
        Role::Worker(io) => {
            io.send(&crate::multi::WorkerMsg::Ready {
                connected: connected as u64,
                scheduled,
            });
            match io.start().await {
                Some(at) => at,
                None => {
                    let _ = ctrl_tx.send(Control::Stop);
                    tasks.shutdown().await;
                    bail!("the coordinator went away before the start");
                }
            }
        }
    };
    let end_ns = start_ns + shared.schedule.end_ns();
    let _ = ctrl_tx.send(Control::Run { start_ns });
    if let Some(tx) = on_start {
        let _ = tx.send(start_ns);
    }
    let cpu_before = process_cpu_ns();
    let pacer = Pacer::spawn(shared.schedule.clone(), start_ns, bells)
        .context("starting the pacer thread")?;

    // The schedule and the grace period, with one interval sample (and progress) a second.
    let mut ticker = Ticker::new(&shared, start_ns);
    let mut tick = tokio::time::interval_at(
        clock::deadline(start_ns + 1_000_000_000),
        Duration::from_secs(1),
    );
    let grace_end = end_ns + cfg.grace.as_nanos() as u64;
    loop {
        let now = clock::now_ns();
        if now >= grace_end
            || (now >= end_ns && settled(&shared.stats.counters.snapshot(), scheduled))
        {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {
                let t = ticker.sample(&shared);
                match &role {
                    Role::Local => progress(&t, ticker.last_counts(), cfg.devices),
                    Role::Worker(io) => io.send(&crate::multi::WorkerMsg::Tick(Box::new(t.clone()))),
                }
                ticker.ticks.push(t);
            }
            () = tokio::time::sleep_until(clock::deadline(end_ns)), if now < end_ns => {}
            () = tokio::time::sleep(SETTLE_POLL), if now >= end_ns => {}
        }
    }
    pacer.stop();
    let generator_cpu_ns = process_cpu_ns().saturating_sub(cpu_before);
    let _ = ctrl_tx.send(Control::Stop);
    let closing = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        eprintln!("perf: some connections did not close in time; aborting them");
        tasks.shutdown().await;
    }
    // The last (partial) second.
    let t = ticker.sample(&shared);
    if role.is_local() {
        progress(&t, ticker.last_counts(), cfg.devices);
    }
    ticker.ticks.push(t);

    let stats = &shared.stats;
    let mut counts = stats.counters.snapshot();
    counts.last_send_ns = counts.last_send_ns.saturating_sub(start_ns);
    Ok(Measured {
        counts,
        tallies: stats.tallies(),
        scheduled,
        window_ns: (shared.schedule.warmup_ns(), shared.schedule.end_ns()),
        ack: stats.ack.merged(),
        delivery: stats.delivery.merged(),
        connect: stats.connect.merged(),
        send_lag: stats.send_lag.merged(),
        connect_phase_ns,
        generator_cpu_ns,
        ticks: ticker.ticks,
        start_ns,
        offset: cfg.offset,
        books: shared
            .ledger
            .as_ref()
            .map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner()))),
    })
}

/// This process's CPU time (user + system, all threads), ns.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Interval histograms: the cumulative ones minus their value at the previous tick.
struct Ticker {
    start_ns: u64,
    prev_ack: hdrhistogram::Histogram<u64>,
    prev_delivery: hdrhistogram::Histogram<u64>,
    prev_counts: Counts,
    ticks: Vec<Tick>,
}

impl Ticker {
    fn new(shared: &Shared, start_ns: u64) -> Self {
        Ticker {
            start_ns,
            prev_ack: shared.stats.ack.merged(),
            prev_delivery: shared.stats.delivery.merged(),
            prev_counts: shared.stats.counters.snapshot(),
            ticks: Vec::new(),
        }
    }

    /// The interval since the last sample; `k` is the second it ends in (0: the first).
    fn sample(&mut self, shared: &Shared) -> Tick {
        let now = clock::now_ns();
        let k = (now.saturating_sub(self.start_ns) / 1_000_000_000)
            .saturating_sub(1)
            .max(self.ticks.last().map_or(0, |t| t.k + 1));
        let ack = shared.stats.ack.merged();
        let delivery = shared.stats.delivery.merged();
        let mut ack_i = ack.clone();
        let _ = ack_i.subtract(&self.prev_ack);
        let mut delivery_i = delivery.clone();
        let _ = delivery_i.subtract(&self.prev_delivery);
        self.prev_ack = ack;
        self.prev_delivery = delivery;
        let mut counts = shared.stats.counters.snapshot();
        counts.last_send_ns = counts.last_send_ns.saturating_sub(self.start_ns);
        let t = Tick {
            k,
            counts,
            prev: self.prev_counts,
            ack: ack_i,
            delivery: delivery_i,
        };
        self.prev_counts = counts;
        t
    }

    fn last_counts(&self) -> &Counts {
        &self.prev_counts
    }
}

/// Resolves every gateway URL once.
async fn resolve(cfg: &LoadConfig) -> anyhow::Result<Vec<Arc<Target>>> {
    let mut out = Vec::with_capacity(cfg.urls.len());
    for u in &cfg.urls {
        let addr = tokio::net::lookup_host(&u.authority)
            .await
            .with_context(|| format!("resolving {}", u.authority))?
            .next()
            .with_context(|| format!("{} resolves to no address", u.authority))?;
        out.push(Arc::new(Target {
            url: u.url.clone(),
            addr,
        }));
    }
    Ok(out)
}

/// Waits for every connection's dial to finish; returns which came up.
async fn connect_all(
    clients: usize,
    ready: &mut mpsc::UnboundedReceiver<Ready>,
    shared: &Shared,
    role: &Role,
) -> Vec<bool> {
    let mut up = vec![false; clients];
    let mut answered = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    while answered < clients {
        tokio::select! {
            r = ready.recv() => match r {
                Some(r) => {
                    up[r.index] = r.up;
                    answered += 1;
                }
                // Every task has ended; those that never answered did not come up.
                None => break,
            },
            _ = tick.tick() => {
                let c = shared.stats.counters.snapshot();
                match role {
                    Role::Local => eprintln!(
                        "perf: connecting: {} up, {} failed, of {clients}",
                        c.connected, c.connect_failed
                    ),
                    Role::Worker(io) => io.send(&crate::multi::WorkerMsg::Connecting {
                        connected: c.connected,
                        failed: c.connect_failed,
                    }),
                }
            }
        }
    }
    up
}

/// Whether the run has nothing more to wait for.
fn settled(c: &Counts, scheduled: u64) -> bool {
    let answered = c.delivered + c.offline + c.failed + c.send_errors + c.missing_acks;
    let distinct = c.received - c.duplicates;
    c.sent + c.unsent >= scheduled && answered >= c.sent && distinct >= c.delivered
}

/// One progress line on stderr for the second that `t` closes; `total` is the run so far.
pub fn progress(t: &Tick, total: &Counts, devices: usize) {
    let c = total;
    let answered = c.delivered + c.offline + c.failed + c.send_errors + c.missing_acks;
    let p99 = |h: &hdrhistogram::Histogram<u64>| {
        if h.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2}ms", h.value_at_quantile(0.99) as f64 / 1000.0)
        }
    };
    let unique = c.received - c.duplicates;
    eprintln!(
        "perf: [{:>4}s] sent {}/s received {}/s | total sent {} acked {} received {} in flight \
         {} errors {} dropped {} not received {} | this second p99 ack {} delivery {}",
        t.k + 1,
        t.counts.sent - t.prev.sent,
        t.counts.received - t.prev.received,
        c.sent,
        c.delivered + c.offline + c.failed,
        c.received,
        c.sent.saturating_sub(answered),
        c.error_frames + c.bad_frames,
        c.disconnects,
        (c.delivered * devices.max(1) as u64).saturating_sub(unique),
        p99(&t.ack),
        p99(&t.delivery),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_needs_every_send_answered_and_delivered_message_received() {
        let done = Counts {
            sent: 10,
            delivered: 8,
            offline: 1,
            send_errors: 1,
            received: 9,
            duplicates: 1,
            ..Counts::default()
        };
        assert!(settled(&done, 10));
        assert!(!settled(&done, 11), "a send still to come");
        assert!(!settled(
            &Counts {
                delivered: 7,
                ..done
            },
            10
        ));
        assert!(!settled(
            &Counts {
                received: 8,
                ..done
            },
            10
        ));
        // A dropped connection's sends count as unsent and missing: nothing left to wait for.
        assert!(settled(
            &Counts {
                sent: 12,
                unsent: 3,
                missing_acks: 2,
                ..done
            },
            15
        ));
    }
}
