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
use crate::report::{Measured, Report, RunConfig};
use crate::schedule::Schedule;
use crate::session::Shared;
use crate::stats::Counts;

/// Between announcing the start and the first slot, so every task sees the start in time.
const START_LEAD: Duration = Duration::from_millis(200);
/// How long closing connections may take before their tasks are aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the grace period checks whether everything is in.
const SETTLE_POLL: Duration = Duration::from_millis(50);

pub async fn run(cfg: &LoadConfig) -> anyhow::Result<Report> {
    let targets = resolve(cfg).await?;
    let schedule = Schedule::new(cfg.rate, cfg.clients, cfg.warmup, cfg.duration);
    let shared = Arc::new(Shared {
        schedule,
        stats: Default::default(),
        body_bytes: cfg.body_bytes,
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
    for i in 0..cfg.clients {
        let user = plan::user(i);
        let spec = Spec {
            index: i,
            token: auth::dev_token(cfg.secret.as_bytes(), &user, run_secs, now_unix),
            user,
            peer: plan::user(plan::peer(i)),
            target: targets[plan::gateway(i, targets.len())].clone(),
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

    let up = connect_all(cfg.clients, &mut ready_rx, &shared).await;
    let connected = up.iter().filter(|&&u| u).count();
    if connected == 0 {
        let _ = ctrl_tx.send(Control::Stop);
        tasks.shutdown().await;
        bail!(
            "no connection came up: {:?}",
            shared.stats.tallies().connect_errors
        );
    }
    let scheduled: u64 = (0..cfg.clients)
        .filter(|&i| up[i])
        .map(|i| shared.schedule.sends_for(i))
        .sum();

    let start_ns = clock::now_ns() + START_LEAD.as_nanos() as u64;
    let end_ns = start_ns + shared.schedule.end_ns();
    eprintln!(
        "perf: {connected}/{} connected; sending {scheduled} messages over {:.1} s, one per \
         client every {:.1} ms",
        cfg.clients,
        shared.schedule.end_ns() as f64 / 1e9,
        shared.schedule.client_interval_ns() as f64 / 1e6
    );
    let _ = ctrl_tx.send(Control::Run { start_ns });
    let pacer = Pacer::spawn(shared.schedule.clone(), start_ns, bells)
        .context("starting the pacer thread")?;

    // The schedule, with a progress line every second.
    let mut tick = tokio::time::interval_at(
        clock::deadline(start_ns + 1_000_000_000),
        Duration::from_secs(1),
    );
    while clock::now_ns() < end_ns {
        tokio::select! {
            _ = tick.tick() => progress(&shared, start_ns),
            () = tokio::time::sleep_until(clock::deadline(end_ns)) => {}
        }
    }
    // Grace: stop early once every send is answered and every delivered message has arrived.
    let grace_end = end_ns + cfg.grace.as_nanos() as u64;
    while clock::now_ns() < grace_end && !settled(&shared.stats.counters.snapshot(), scheduled) {
        tokio::time::sleep(SETTLE_POLL).await;
    }
    pacer.stop();
    let _ = ctrl_tx.send(Control::Stop);
    let closing = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        eprintln!("perf: some connections did not close in time; aborting them");
        tasks.shutdown().await;
    }
    progress(&shared, start_ns);

    let stats = &shared.stats;
    let warmup_end = start_ns + shared.schedule.warmup_ns();
    Ok(Report::build(
        RunConfig {
            urls: cfg.urls.iter().map(|u| u.url.clone()).collect(),
            clients: cfg.clients,
            rate: cfg.rate,
            warmup_s: cfg.warmup.as_secs_f64(),
            duration_s: cfg.duration.as_secs_f64(),
            body_bytes: cfg.body_bytes,
            threads: cfg.threads,
        },
        &Measured {
            counts: stats.counters.snapshot(),
            tallies: stats.tallies(),
            scheduled,
            window_ns: (warmup_end, end_ns),
            ack: stats.ack.merged(),
            delivery: stats.delivery.merged(),
            connect: stats.connect.merged(),
            send_lag: stats.send_lag.merged(),
        },
    ))
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
                eprintln!(
                    "perf: connecting: {} up, {} failed, of {clients}",
                    c.connected, c.connect_failed
                );
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

/// One line on stderr: counters and the latency so far.
fn progress(shared: &Shared, start_ns: u64) {
    let c = shared.stats.counters.snapshot();
    let answered = c.delivered + c.offline + c.failed + c.send_errors + c.missing_acks;
    let p99 = |h: hdrhistogram::Histogram<u64>| {
        if h.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2}ms", h.value_at_quantile(0.99) as f64 / 1000.0)
        }
    };
    eprintln!(
        "perf: [{:>6.1}s] sent {} acked {} received {} in flight {} errors {} dropped {} | p99 ack {} delivery {}",
        clock::now_ns().saturating_sub(start_ns) as f64 / 1e9,
        c.sent,
        c.delivered + c.offline + c.failed,
        c.received,
        c.sent.saturating_sub(answered),
        c.error_frames + c.bad_frames,
        c.disconnects,
        p99(shared.stats.ack.merged()),
        p99(shared.stats.delivery.merged()),
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
