//! `perf run`: start a local stack (`stack`), drive one scenario against it with the same load
//! engine as `perf load`, and sample the servers' CPU time, RSS and open files from `/proc`
//! (`procstat`) to report CPU per message and memory per connection.
//!
//! Scenarios: `steady` (pairs chatting at `--rate`), `idle` (connected clients sending one
//! message per second in all; memory per connection is the servers' RSS growth over their RSS
//! before any client at the plateau while every client is connected, divided by the clients;
//! the peak growth, teardown included, is reported beside it), `storm` (as `steady` but every
//! client dials at once), `sweep` (steady at `--rate` x 1, 2, 3 ... up to `--max-rate`, stopping at the first
//! rate whose delivery P99 is over `--p99-ms` or that loses anything).

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
    /// Steady runs at `--rate`, 2x, 3x ... `--max-rate` on one stack, stopping at the first
    /// whose delivery P99 exceeds `--p99-ms` or that is not clean.
    Sweep,
}

/// One rate of a sweep.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SweepPoint {
    pub rate: f64,
    pub delivery_p99_ms: f64,
    pub clean: bool,
    pub passed: bool,
    /// Messages clients received in this run (warm-up included).
    pub received: u64,
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
    /// Sweep: highest rate tried, msg/s.
    #[arg(long, default_value_t = 100_000.0)]
    pub max_rate: f64,
    /// Sweep: the delivery P99 bound, ms.
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,
    /// Runtime worker threads per load process (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Sessions per user (multi-device recipients).
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// Seconds to wait after the schedule for outstanding acks and messages (above the
    /// gateway's 10 s send timeout, every send is answered on a live system).
    #[arg(long, default_value_t = crate::cli::DEFAULT_GRACE_S)]
    pub grace: f64,
    /// Load processes (0: enough for at most 18,000 connections each).
    #[arg(long, default_value_t = 0)]
    pub processes: usize,
    /// Write HdrHistogram interval logs of the (last) load run into this directory.
    #[arg(long)]
    pub hdr_log: Option<PathBuf>,
    /// Write SVG plots (spectrum, timeline, and the sweep) into this directory.
    #[arg(long)]
    pub plot: Option<PathBuf>,
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
    /// Median RSS while the process held the most open files (`procstat::plateau_rss`).
    pub plateau_rss_bytes: u64,
    /// (peak RSS - RSS before) / all clients, bytes: includes the ramp's and teardown's
    /// transient allocations.
    pub rss_bytes_per_connection: f64,
    /// (plateau RSS - RSS before) / all clients, bytes; summed over the gateways this is the
    /// gateway memory per idle connection (`--scenario idle`).
    pub rss_bytes_per_connection_plateau: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct RunReport {
    pub scenario: Scenario,
    pub servers: Vec<ServerFigures>,
    /// The last load run (for a sweep: the last rate tried).
    pub load: Report,
    /// Sweep only: every rate tried.
    pub sweep: Vec<SweepPoint>,
    /// Sweep only: the highest rate whose delivery P99 stayed under `--p99-ms`, run clean.
    pub max_rate_p99_under_bound: Option<f64>,
    /// Kernel memory per TCP socket (both ends of every connection are on this host), from the
    /// growth between the start and the peak; `None` without root or `/proc/slabinfo`.
    pub kernel: Option<KernelFigures>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelFigures {
    pub before: procstat::KernelSockets,
    pub peak: procstat::KernelSockets,
    /// Sockets opened: peak `tcp_inuse` - before.
    pub sockets: u64,
    /// Slab growth (TCP, sock_inode_cache, filp, eventpoll_epi) per socket, bytes.
    pub slab_bytes_per_socket: f64,
    /// TCP buffer growth per socket, bytes.
    pub buffer_bytes_per_socket: f64,
}

impl RunArgs {
    fn load_args(&self, urls: Vec<String>) -> LoadArgs {
        let (rate, connect_rate) = match self.scenario {
            Scenario::Steady | Scenario::Sweep => (self.rate, crate::cli::DEFAULT_CONNECT_RATE),
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
            grace: self.grace,
            threads: self.threads,
            devices: self.devices,
            processes: self.processes,
            protocol: crate::protocol::Dialect::Connect,
            hdr_log: None,
            plot: None,
            first_client: 0,
            ledger: false,
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
    // Peak RSS and open files per server, sampled while the load runs; the kernel's socket
    // memory machine-wide, at the sample with the most TCP sockets.
    let kernel_before = procstat::kernel_sockets();
    let kernel_peak = Arc::new(Mutex::new(kernel_before.unwrap_or_default()));
    let series = Arc::new(Mutex::new(vec![Vec::<ProcSample>::new(); pids.len()]));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (series, stop, pids) = (series.clone(), stop.clone(), pids.clone());
        let kernel_peak = kernel_peak.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let (Some(k), Ok(mut p)) = (procstat::kernel_sockets(), kernel_peak.lock()) {
                    if k.tcp_inuse > p.tcp_inuse {
                        *p = k;
                    }
                }
                for (i, (_, pid)) in pids.iter().enumerate() {
                    if let Some(s) = procstat::sample(*pid) {
                        if let Ok(mut p) = series.lock() {
                            p[i].push(s);
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
    let mut sweep = Vec::new();
    let mut best = None;
    let load = if args.scenario == Scenario::Sweep {
        let mut k = 1.0;
        loop {
            let cfg = crate::cli::LoadConfig {
                rate: args.rate * k,
                ..cfg.clone()
            };
            let r = crate::multi::run(&cfg, &rt);
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    let _ = sampler.join();
                    return Err(e);
                }
            };
            let p99 = r.latency_us.delivery.p99 as f64 / 1e3;
            let passed = r.clean() && p99 < args.p99_ms;
            eprintln!(
                "perf: sweep {:.0} msg/s: delivery p99 {p99:.2} ms, clean {}",
                cfg.rate,
                r.clean()
            );
            sweep.push(SweepPoint {
                rate: cfg.rate,
                delivery_p99_ms: p99,
                clean: r.clean(),
                passed,
                received: r.messages.received,
            });
            if passed {
                best = Some(cfg.rate);
            }
            k += 1.0;
            if !passed || args.rate * k > args.max_rate {
                break Ok(r);
            }
        }
    } else {
        crate::multi::run(&cfg, &rt)
    };
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let load: Report = load?;
    let after: Vec<ProcSample> = pids
        .iter()
        .map(|(_, p)| procstat::sample(*p).unwrap_or_default())
        .collect();
    let series = series.lock().map(|p| p.clone()).unwrap_or_default();
    // CPU covers every run of a sweep, so divide by every run's messages.
    let msgs = if sweep.is_empty() {
        load.messages.received
    } else {
        sweep.iter().map(|p| p.received).sum()
    }
    .max(1) as f64;
    let servers = pids
        .into_iter()
        .zip(before.into_iter().zip(after))
        .zip(series)
        .map(|(((name, pid), (b, a)), series)| {
            let cpu_s = a.cpu_ns.saturating_sub(b.cpu_ns) as f64 / 1e9;
            let peak_rss = series.iter().map(|s| s.rss_bytes).max().unwrap_or(0);
            let peak_fds = series.iter().map(|s| s.open_files).max().unwrap_or(0);
            let plateau_rss = procstat::plateau_rss(&series).unwrap_or(0);
            let per_client =
                |rss: u64| rss.saturating_sub(b.rss_bytes) as f64 / args.clients as f64;
            ServerFigures {
                name,
                pid,
                before: b,
                after: a,
                peak_rss_bytes: peak_rss,
                peak_open_files: peak_fds,
                cpu_s,
                cpu_us_per_msg: cpu_s * 1e6 / msgs,
                plateau_rss_bytes: plateau_rss,
                rss_bytes_per_connection: per_client(peak_rss),
                rss_bytes_per_connection_plateau: per_client(plateau_rss),
            }
        })
        .collect();
    drop(stack);
    let kernel = kernel_before.and_then(|before| {
        let peak = *kernel_peak.lock().ok()?;
        let sockets = peak
            .tcp_inuse
            .checked_sub(before.tcp_inuse)
            .filter(|&n| n > 0)?;
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / sockets as f64;
        Some(KernelFigures {
            before,
            peak,
            sockets,
            slab_bytes_per_socket: per(peak.slab_bytes, before.slab_bytes).round(),
            buffer_bytes_per_socket: per(peak.tcp_buffer_bytes, before.tcp_buffer_bytes).round(),
        })
    });
    Ok(RunReport {
        kernel,
        scenario: args.scenario,
        servers,
        load,
        sweep,
        max_rate_p99_under_bound: best,
    })
}

impl RunReport {
    /// The load table followed by one row per server.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = self.load.table();
        for p in &self.sweep {
            let _ = writeln!(
                out,
                "sweep {:>9.0} msg/s  delivery p99 {:>9.2} ms  clean {:<5}  {}",
                p.rate,
                p.delivery_p99_ms,
                p.clean,
                if p.passed { "pass" } else { "FAIL" }
            );
        }
        if self.scenario == Scenario::Sweep {
            let _ = writeln!(
                out,
                "highest rate with delivery p99 under the bound: {}",
                self.max_rate_p99_under_bound
                    .map_or("none".to_string(), |r| format!("{r:.0} msg/s"))
            );
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:>9} {:>11} {:>12} {:>13} {:>13} {:>10} {:>13} {:>13}",
            "server",
            "cpu s",
            "cpu us/msg",
            "rss before",
            "rss plateau",
            "rss peak",
            "fds peak",
            "B/client plat",
            "B/client peak"
        );
        let mut total: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for s in &self.servers {
            let _ = writeln!(
                out,
                "{:<10} {:>9.2} {:>11.1} {:>12} {:>13} {:>13} {:>10} {:>13.0} {:>13.0}",
                s.name,
                s.cpu_s,
                s.cpu_us_per_msg,
                s.before.rss_bytes,
                s.plateau_rss_bytes,
                s.peak_rss_bytes,
                s.peak_open_files,
                s.rss_bytes_per_connection_plateau,
                s.rss_bytes_per_connection
            );
            let kind = if s.name.starts_with("gateway") {
                "gateways"
            } else {
                "others"
            };
            let t = total.entry(kind).or_default();
            t.0 += s.rss_bytes_per_connection_plateau;
            t.1 += s.rss_bytes_per_connection;
        }
        if let Some((plateau, peak)) = total.get("gateways") {
            let _ = writeln!(
                out,
                "gateways together: {plateau:.0} bytes RSS per connection at the plateau (all \
                 clients connected), {peak:.0} from the peak (teardown included)"
            );
        }
        if let Some(k) = &self.kernel {
            let _ = writeln!(
                out,
                "kernel, per TCP socket (both ends on this host, {} sockets at the peak): slab {:.0} B (TCP, sock_inode_cache, filp, eventpoll_epi; dentry not counted) + buffers {:.0} B",
                k.sockets, k.slab_bytes_per_socket, k.buffer_bytes_per_socket
            );
        }
        out
    }
}
