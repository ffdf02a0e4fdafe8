//! Multi-process runs: one process holds at most ~18,000 sockets here (20,000 open files), so a
//! bigger `perf load` is split over worker processes (`perf worker`, started by perf itself),
//! each with a contiguous range of whole user pairs (`plan::split`), its share of the rate, and
//! its own source address 127.0.0.(p+2) when the gateways are on loopback.
//!
//! The coordinator talks to each worker over its stdin/stdout, one JSON object a line: it
//! writes the worker's `LoadConfig`, then `{"start_unix_ns":N}` once every worker is connected
//! (all start the schedule at the same wall-clock instant); the worker answers with
//! [`WorkerMsg`]s: connect progress, ready, one tick a second, and finally its [`Measured`],
//! histograms in HdrHistogram V2 + deflate. The coordinator merges them into one report, so
//! percentiles are exact over all processes.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::cli::LoadConfig;
use crate::clock;
use crate::load::{self, Role};
use crate::plan;
use crate::report::{Measured, Report, RunConfig, Tick};

/// Time between the start announcement and the first slot, so every worker hears it in time.
const START_LEAD: Duration = Duration::from_millis(500);

/// A worker's report line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerMsg {
    Connecting { connected: u64, failed: u64 },
    Ready { connected: u64, scheduled: u64 },
    Tick(Box<Tick>),
    Done(Box<Measured>),
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct StartLine {
    start_unix_ns: u64,
}

/// A worker's side of the pipe.
pub struct WorkerIo {
    start: Option<tokio::sync::oneshot::Receiver<u64>>,
}

impl WorkerIo {
    pub fn send(&self, msg: &WorkerMsg) {
        if let Ok(line) = serde_json::to_string(msg) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// Waits for the coordinator's start; the start on this process's clock.
    pub async fn start(&mut self) -> Option<u64> {
        let unix_ns = self.start.take()?.await.ok()?;
        let now_unix = unix_now_ns();
        let now = clock::now_ns();
        Some(now + unix_ns.saturating_sub(now_unix))
    }
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `perf worker`: read the configuration, run, report.
pub fn worker_main() -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut first = String::new();
    stdin.lock().read_line(&mut first)?;
    let cfg: LoadConfig = serde_json::from_str(&first).context("reading the worker config")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_ok() {
            if let Ok(s) = serde_json::from_str::<StartLine>(&line) {
                let _ = tx.send(s.start_unix_ns);
            }
        }
    });
    let io = WorkerIo { start: Some(rx) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()?;
    let reply = WorkerIo { start: None };
    match rt.block_on(load::run(&cfg, Role::Worker(io))) {
        Ok(m) => reply.send(&WorkerMsg::Done(Box::new(m))),
        Err(e) => reply.send(&WorkerMsg::Failed(format!("{e:#}"))),
    }
    Ok(())
}

/// Runs `cfg`, in this process or split over `cfg.processes` workers, and builds the report.
pub fn run(cfg: &LoadConfig, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    let start = crate::report::loadavg();
    let mut report = run_inner(cfg, rt)?;
    report.loadavg_start = start;
    report.loadavg_end = crate::report::loadavg();
    Ok(report)
}

fn run_inner(cfg: &LoadConfig, rt: &tokio::runtime::Runtime) -> anyhow::Result<Report> {
    if cfg.processes <= 1 {
        let m = rt.block_on(load::run(cfg, Role::Local))?;
        return Ok(Report::build(RunConfig::of(cfg), &m));
    }
    let parts = plan::split(cfg.clients, cfg.devices, cfg.processes);
    let loopback = cfg.urls.iter().all(|u| {
        u.authority
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| a.ip().is_loopback() && a.is_ipv4())
    });
    let exe = std::env::current_exe().context("perf's own path")?;
    let (tx, rx) = mpsc::channel::<(usize, Option<WorkerMsg>)>();
    let mut workers: Vec<(Child, ChildStdin)> = Vec::new();
    let kill_all = |workers: &mut Vec<(Child, ChildStdin)>| {
        for (c, _) in workers.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for (w, &(offset, count)) in parts.iter().enumerate() {
        let share = count as f64 / cfg.clients as f64;
        let wcfg = LoadConfig {
            clients: count,
            offset: cfg.offset + offset,
            rate: cfg.rate * share,
            connect_rate: cfg.connect_rate * share,
            processes: 1,
            source_ip: loopback.then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + w as u8))),
            json: None,
            hdr_log: None,
            plot: None,
            ..cfg.clone()
        };
        let mut cmd = Command::new(&exe);
        // SAFETY: runs between fork and exec; prctl is async-signal-safe. A worker whose
        // coordinator died stops instead of finishing its run.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a perf worker")?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        writeln!(stdin, "{}", serde_json::to_string(&wcfg)?)?;
        stdin.flush()?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<WorkerMsg>(&line) {
                    Ok(m) => {
                        let _ = tx.send((w, Some(m)));
                    }
                    Err(e) => eprintln!("perf: worker {w}: unreadable line ({e})"),
                }
            }
            let _ = tx.send((w, None));
        });
        workers.push((child, stdin));
    }
    drop(tx);
    eprintln!(
        "perf: {} clients over {} processes ({})",
        cfg.clients,
        parts.len(),
        if loopback {
            "source addresses 127.0.0.2.."
        } else {
            "default source address"
        }
    );

    let n = parts.len();
    let mut connecting = vec![(0u64, 0u64); n];
    let mut ready = vec![None; n];
    let mut done: Vec<Option<Measured>> = (0..n).map(|_| None).collect();
    let mut ticks: std::collections::BTreeMap<u64, Vec<Tick>> = Default::default();
    let mut last_print = Instant::now();
    let mut started = false;
    while done.iter().any(Option::is_none) {
        let Ok((w, msg)) = rx.recv() else { break };
        match msg {
            None => {
                if done[w].is_none() {
                    kill_all(&mut workers);
                    bail!("perf worker {w} ended without a report");
                }
            }
            Some(WorkerMsg::Connecting { connected, failed }) => {
                connecting[w] = (connected, failed);
                if last_print.elapsed() >= Duration::from_secs(1) {
                    last_print = Instant::now();
                    let (up, bad) = connecting
                        .iter()
                        .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
                    eprintln!(
                        "perf: connecting: {up} up, {bad} failed, of {}",
                        cfg.clients
                    );
                }
            }
            Some(WorkerMsg::Ready {
                connected,
                scheduled,
            }) => {
                ready[w] = Some((connected, scheduled));
                if !started && ready.iter().all(Option::is_some) {
                    started = true;
                    let (up, sched) = ready
                        .iter()
                        .flatten()
                        .fold((0, 0), |a, r| (a.0 + r.0, a.1 + r.1));
                    eprintln!(
                        "perf: {up}/{} connected over {n} processes; sending {sched} messages",
                        cfg.clients
                    );
                    let line = serde_json::to_string(&StartLine {
                        start_unix_ns: unix_now_ns() + START_LEAD.as_nanos() as u64,
                    })?;
                    for (_, stdin) in workers.iter_mut() {
                        let _ = writeln!(stdin, "{line}");
                        let _ = stdin.flush();
                    }
                }
            }
            Some(WorkerMsg::Tick(t)) => {
                let k = t.k;
                let got = ticks.entry(k).or_default();
                got.push(*t);
                if got.len() == n {
                    let merged = merge_ticks(std::mem::take(got));
                    load::progress(&merged, &merged.counts, cfg.devices);
                }
            }
            Some(WorkerMsg::Done(m)) => done[w] = Some(*m),
            Some(WorkerMsg::Failed(e)) => {
                kill_all(&mut workers);
                bail!("perf worker {w}: {e}");
            }
        }
    }
    for (mut c, stdin) in workers {
        drop(stdin);
        let _ = c.wait();
    }
    let merged =
        Measured::merge(done.into_iter().flatten().collect()).context("no worker reported")?;
    Ok(Report::build(RunConfig::of(cfg), &merged))
}

/// Several workers' tick `k`, added up.
fn merge_ticks(mut ts: Vec<Tick>) -> Tick {
    let mut out = ts.pop().expect("at least one tick");
    for t in ts {
        let last = out.counts.last_send_ns.max(t.counts.last_send_ns);
        out.counts.add(&t.counts);
        out.counts.last_send_ns = last;
        out.prev.add(&t.prev);
        let _ = out.ack.add(&t.ack);
        let _ = out.delivery.add(&t.delivery);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_histogram, Counts};

    #[test]
    fn worker_messages_round_trip_with_histograms() {
        let mut h = new_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let t = Tick {
            k: 3,
            counts: Counts {
                sent: 10,
                ..Counts::default()
            },
            prev: Counts::default(),
            ack: h.clone(),
            delivery: new_histogram(),
        };
        let line = serde_json::to_string(&WorkerMsg::Tick(Box::new(t.clone()))).unwrap();
        assert!(!line.contains('\n'));
        match serde_json::from_str::<WorkerMsg>(&line).unwrap() {
            WorkerMsg::Tick(back) => assert_eq!(*back, t),
            other => panic!("{other:?}"),
        }
        let merged = merge_ticks(vec![t.clone(), t]);
        assert_eq!(merged.counts.sent, 20);
        assert_eq!(merged.ack.len(), 2000);
        assert_eq!(merged.ack.value_at_quantile(0.99), 990);
    }
}
