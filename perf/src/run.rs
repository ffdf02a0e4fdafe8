//! `perf run`: start a local stack (`stack`), drive one scenario against it with the same load
//! engine as `perf load`, and sample the servers' CPU time, RSS and open files from `/proc`
//! (`procstat`) to report CPU per message and memory per connection.
//!
//! Scenarios: `steady` (pairs chatting at `--rate`), `idle` (connected clients sending one
//! message per second in all; memory per connection is the servers' peak RSS growth over their
//! RSS before any client, divided by the clients), `storm` (as `steady` but every client dials
//! at once).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::cli::LoadArgs;
use crate::procstat::{self, ProcSample};
use crate::report::Report;
use crate::stack::{self, Stack};

/// How often the sampler reads `/proc`.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Rate of the idle scenario (messages per second over all clients): enough to prove the
/// connections are live, too little to matter for memory.
const IDLE_RATE: f64 = 1.0;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Steady,
    Idle,
    Storm,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long, value_enum, default_value = "steady")]
    pub scenario: Scenario,
    /// Client connections.
    #[arg(long, default_value_t = 2_000)]
    pub clients: usize,
    /// Sends per second over all clients (ignored by `idle`).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Warm-up seconds at full rate before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Gateways in the stack (all behind one router, Redis registry).
    #[arg(long, default_value_t = 2)]
    pub gateways: usize,
    /// Directory holding the `router` and `gateway` binaries (default: perf's own).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Also write the report (load figures and per-server figures) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Runtime worker threads for the load (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// One server's figures over the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerFigures {
    pub name: String,
    pub pid: u32,
    pub before: ProcSample,
    pub after: ProcSample,
    pub peak_rss_bytes: u64,
    pub peak_open_files: u64,
    pub cpu_s: f64,
    /// CPU time divided by messages received by clients, microseconds.
    pub cpu_us_per_msg: f64,
    /// (peak RSS - RSS before) / all clients, bytes; summed over the gateways this is the
    /// gateway memory per connection.
    pub rss_bytes_per_connection: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct RunReport {
    pub scenario: Scenario,
    pub servers: Vec<ServerFigures>,
    pub load: Report,
}

impl RunArgs {
    fn load_args(&self, urls: Vec<String>) -> LoadArgs {
        let (rate, connect_rate) = match self.scenario {
            Scenario::Steady => (self.rate, crate::cli::DEFAULT_CONNECT_RATE),
            Scenario::Idle => (IDLE_RATE, crate::cli::DEFAULT_CONNECT_RATE),
            Scenario::Storm => (self.rate, 0.0),
        };
        LoadArgs {
            urls,
            secret: stack::SECRET.into(),
            clients: self.clients,
            rate,
            duration: self.duration,
            warmup: self.warmup,
            body_bytes: crate::cli::DEFAULT_BODY_BYTES,
            json: None,
            connect_rate,
            connect_timeout: crate::cli::DEFAULT_CONNECT_TIMEOUT_S,
            grace: crate::cli::DEFAULT_GRACE_S,
            threads: self.threads,
        }
    }
}

/// Runs the scenario; prints the tables and writes JSON if asked.
pub fn run(args: &RunArgs, fd_limit: u64) -> anyhow::Result<RunReport> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("perf's own directory")?
            .to_path_buf(),
    };
    // Check the load flags before starting anything.
    let placeholder = vec!["ws://127.0.0.1:1/ws".to_string()];
    if let Err(errs) = args.load_args(placeholder).validate(fd_limit) {
        anyhow::bail!(errs.join("; "));
    }
    eprintln!(
        "perf: starting redis, router and {} gateways",
        args.gateways
    );
    let stack = Stack::start(&bin_dir, args.gateways)?;
    let cfg = args
        .load_args(stack.urls.clone())
        .validate(fd_limit)
        .map_err(|e| anyhow::anyhow!(e.join("; ")))?;
    let pids = stack.pids();
    let before: Vec<ProcSample> = pids
        .iter()
        .map(|(_, p)| procstat::sample(*p).unwrap_or_default())
        .collect();
    // Peak RSS and open files per server, sampled while the load runs.
    let peaks = Arc::new(Mutex::new(vec![(0u64, 0u64); pids.len()]));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peaks, stop, pids) = (peaks.clone(), stop.clone(), pids.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (i, (_, pid)) in pids.iter().enumerate() {
                    if let Some(s) = procstat::sample(*pid) {
                        if let Ok(mut p) = peaks.lock() {
                            p[i].0 = p[i].0.max(s.rss_bytes);
                            p[i].1 = p[i].1.max(s.open_files);
                        }
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.threads)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let load = rt.block_on(crate::load::run(&cfg));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let load = load?;
    let after: Vec<ProcSample> = pids
        .iter()
        .map(|(_, p)| procstat::sample(*p).unwrap_or_default())
        .collect();
    let peaks = peaks.lock().map(|p| p.clone()).unwrap_or_default();
    let msgs = load.messages.received.max(1) as f64;
    let servers = pids
        .into_iter()
        .zip(before.into_iter().zip(after))
        .zip(peaks)
        .map(|(((name, pid), (b, a)), (peak_rss, peak_fds))| {
            let cpu_s = a.cpu_ns.saturating_sub(b.cpu_ns) as f64 / 1e9;
            ServerFigures {
                name,
                pid,
                before: b,
                after: a,
                peak_rss_bytes: peak_rss,
                peak_open_files: peak_fds,
                cpu_s,
                cpu_us_per_msg: cpu_s * 1e6 / msgs,
                rss_bytes_per_connection: peak_rss.saturating_sub(b.rss_bytes) as f64
                    / args.clients as f64,
            }
        })
        .collect();
    drop(stack);
    Ok(RunReport {
        scenario: args.scenario,
        servers,
        load,
    })
}

impl RunReport {
    /// The load table followed by one row per server.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = self.load.table();
        let _ = writeln!(
            out,
            "\n{:<10} {:>9} {:>11} {:>12} {:>13} {:>10} {:>12}",
            "server", "cpu s", "cpu us/msg", "rss before", "rss peak", "fds peak", "rss B/client"
        );
        let mut total: BTreeMap<&str, f64> = BTreeMap::new();
        for s in &self.servers {
            let _ = writeln!(
                out,
                "{:<10} {:>9.2} {:>11.1} {:>12} {:>13} {:>10} {:>12.0}",
                s.name,
                s.cpu_s,
                s.cpu_us_per_msg,
                s.before.rss_bytes,
                s.peak_rss_bytes,
                s.peak_open_files,
                s.rss_bytes_per_connection
            );
            let kind = if s.name.starts_with("gateway") {
                "gateways"
            } else {
                "others"
            };
            *total.entry(kind).or_default() += s.rss_bytes_per_connection;
        }
        if let Some(g) = total.get("gateways") {
            let _ = writeln!(
                out,
                "gateways together: {g:.0} bytes RSS per connection (peak growth / clients)"
            );
        }
        out
    }
}
