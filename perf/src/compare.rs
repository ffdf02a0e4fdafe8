//! `perf compare [--quick] --json PATH`: Connect and the Socket.IO peer (`perf/socketio/`) side
//! by side, in one run on this machine, loaded in turn by the same generator with the same
//! schedule.
//!
//! For each system: start it (Connect: redis-server, router, 2 gateways; the peer: redis-server
//! and 2 `node server.js` with the Redis adapter), then
//!
//! 1. **connect storm + idle**: `--idle-clients` connections dial at once and stay idle (1 msg/s in
//!    all): connects per second (connections up / first dial to last welcome) and server RSS
//!    per idle connection (RSS growth of the server processes, Redis excluded, / clients, at the
//!    plateau while every client is connected: `procstat::plateau_rss`);
//! 2. **rate sweep**: steady pairs at `--common-rate`, then doubling until a run fails (delivery
//!    P99 over `--p99-ms`, or anything lost, unanswered or failed), then bisecting between the
//!    last pass and the first failure: the highest passing rate, and the P99 at the common rate
//!    (the sweep's first run).
//!
//! Every run checks integrity: a send acked `delivered` but never received, or never acked at
//! all, is a *silent drop*, counted per run and in total.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use crate::cli::{LoadArgs, LoadConfig};
use crate::procstat;
use crate::protocol::Dialect;
use crate::report::Report;
use crate::stack::{self, Stack};

#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Short runs (the whole comparison in under 3 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Write the comparison as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write SVG plots (both systems' sweep; each system's spectrum at the common rate).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Client connections in every sweep run.
    #[arg(long, default_value_t = 2_000)]
    pub clients: usize,
    /// Client connections in the connect storm and idle phase. More than `--clients` because
    /// memory per connection is a growth of a few MB over a server's 15-20 MB: at 2,000 clients
    /// allocator granularity alone moved Connect's figure by 2x between runs.
    #[arg(long, default_value_t = 10_000)]
    pub idle_clients: usize,
    /// Seconds the storm's clients stay idle. Long enough for Connect's gateways to park them
    /// all before the plateau's second half, from which the figure is taken (`--park-after-ms`,
    /// 5 s, parks a connection within one to two periods), since production connections are
    /// idle for minutes.
    #[arg(long, default_value_t = 20.0)]
    pub idle_seconds: f64,
    /// The rate both systems are measured at (msg/s), and the sweep's first.
    #[arg(long, default_value_t = 1_000.0)]
    pub common_rate: f64,
    /// The sweep's P99 bound (delivery latency), ms.
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,
    /// Highest rate tried, msg/s.
    #[arg(long, default_value_t = 128_000.0)]
    pub max_rate: f64,
    /// Measured seconds per sweep run (default 3 with --quick, else 8).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Directory holding `router` and `gateway` (default: perf's own).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The Socket.IO peer's directory (server.js, package.json).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/socketio"))]
    pub socketio_dir: PathBuf,
    /// Only this system (`connect` or `socketio`); default both.
    #[arg(long, value_enum)]
    pub only: Option<Dialect>,
}

/// One sweep run.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: f64,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub delivery_p999_ms: f64,
    pub ack_p99_ms: f64,
    pub receive_rate: f64,
    pub clean: bool,
    pub passed: bool,
    pub silent_drops: u64,
    pub lost: u64,
    pub missing_acks: u64,
    pub failed_acks: u64,
    pub unsent: u64,
}

/// One system's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SystemFigures {
    pub max_rate_p99_under_50ms: Option<f64>,
    pub p99_ms_at_common_rate: Option<f64>,
    pub p999_ms_at_common_rate: Option<f64>,
    /// Server RSS growth per connection at the idle plateau (all clients connected; see
    /// `procstat::plateau_rss`), summed over the server processes.
    pub rss_bytes_per_idle_connection: f64,
    /// The same from the peak RSS, teardown included (the figure before 2026-11-27).
    pub rss_bytes_per_connection_peak: f64,
    pub connects_per_second: f64,
    /// Sum over every run of this system.
    pub silent_drops: u64,
    pub idle_clients_up: u64,
    /// RSS growth per idle connection at the plateau, per server process.
    pub rss_bytes_per_idle_connection_by_process: Vec<(String, f64)>,
    pub sweep: Vec<Step>,
    /// Load average (1, 5, 15 min) before and after this system's runs.
    pub loadavg_before: String,
    pub loadavg_after: String,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    /// Connect's highest passing rate / the peer's (target: at least 25).
    pub max_rate: Option<f64>,
    /// The peer's P99 at the common rate / Connect's (how many times lower Connect's is).
    pub p99_at_common_rate: Option<f64>,
    /// The peer's RSS per idle connection / Connect's (target: at least 10).
    pub rss_per_idle_connection: Option<f64>,
    /// Connect's connects per second / the peer's (target: at least 20).
    pub connects_per_second: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Comparison {
    pub quick: bool,
    pub clients: usize,
    pub idle_clients: usize,
    pub common_rate: f64,
    pub p99_bound_ms: f64,
    pub duration_s: f64,
    pub connect: Option<SystemFigures>,
    pub socketio: Option<SystemFigures>,
    pub ratios: Ratios,
}

pub fn run(args: &CompareArgs, fd_limit: u64) -> anyhow::Result<()> {
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("perf's own directory")?
            .to_path_buf(),
    };
    let duration = args.duration.unwrap_or(if args.quick { 3.0 } else { 8.0 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let mut figures = [None, None];
    for (slot, dialect) in [Dialect::Connect, Dialect::Socketio]
        .into_iter()
        .enumerate()
    {
        if args.only.is_some_and(|o| o != dialect) {
            continue;
        }
        eprintln!("perf compare: {dialect:?}: starting");
        let stack = match dialect {
            Dialect::Connect => Stack::start(&bin_dir, 2)?,
            Dialect::Socketio => Stack::start_socketio(&args.socketio_dir, 2)?,
        };
        let f = measure(args, &rt, &stack, dialect, duration, fd_limit)?;
        drop(stack);
        eprintln!(
            "perf compare: {dialect:?}: max rate {:?} msg/s, p99 at {} msg/s {:?} ms, {:.0} B RSS per idle connection, {:.0} connects/s, {} silent drops",
            f.max_rate_p99_under_50ms,
            args.common_rate,
            f.p99_ms_at_common_rate,
            f.rss_bytes_per_idle_connection,
            f.connects_per_second,
            f.silent_drops
        );
        figures[slot] = Some(f);
        // Let the sockets of the stopped system drain out of TIME_WAIT accounting a little.
        std::thread::sleep(Duration::from_secs(1));
    }
    let [connect, socketio] = figures;
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some((a / b * 100.0).round() / 100.0),
        _ => None,
    };
    let (c, s) = (connect.as_ref(), socketio.as_ref());
    let ratios = Ratios {
        max_rate: ratio(
            c.and_then(|c| c.max_rate_p99_under_50ms),
            s.and_then(|s| s.max_rate_p99_under_50ms),
        ),
        p99_at_common_rate: ratio(
            s.and_then(|s| s.p99_ms_at_common_rate),
            c.and_then(|c| c.p99_ms_at_common_rate),
        ),
        rss_per_idle_connection: ratio(
            s.map(|s| s.rss_bytes_per_idle_connection),
            c.map(|c| c.rss_bytes_per_idle_connection),
        ),
        connects_per_second: ratio(
            c.map(|c| c.connects_per_second),
            s.map(|s| s.connects_per_second),
        ),
    };
    let cmp = Comparison {
        quick: args.quick,
        clients: args.clients,
        idle_clients: args.idle_clients,
        common_rate: args.common_rate,
        p99_bound_ms: args.p99_ms,
        duration_s: duration,
        connect,
        socketio,
        ratios,
    };
    print!("{}", table(&cmp));
    crate::write_json(args.json.as_deref(), &cmp)?;
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir)?;
        let series: Vec<(&str, Vec<(f64, f64)>)> =
            [("connect", &cmp.connect), ("socket.io", &cmp.socketio)]
                .into_iter()
                .filter_map(|(n, f)| {
                    let mut pts: Vec<(f64, f64)> = f
                        .as_ref()?
                        .sweep
                        .iter()
                        .map(|s| (s.rate, s.delivery_p99_ms))
                        .collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Some((n, pts))
                })
                .collect();
        crate::plot::sweep(
            &dir.join("compare_sweep.svg"),
            "Connect vs Socket.IO: delivery P99 by offered rate",
            &series,
            args.p99_ms,
        )?;
        eprintln!("perf compare: plots in {}", dir.display());
    }
    Ok(())
}

use crate::report::loadavg;

/// One load run's schedule.
struct Phase {
    clients: usize,
    rate: f64,
    duration: f64,
    warmup: f64,
    connect_rate: f64,
}

fn load_config(
    urls: &[String],
    dialect: Dialect,
    phase: Phase,
    fd_limit: u64,
) -> anyhow::Result<LoadConfig> {
    let Phase {
        clients,
        rate,
        duration,
        warmup,
        connect_rate,
    } = phase;
    LoadArgs {
        urls: urls.to_vec(),
        secret: stack::SECRET.into(),
        clients,
        rate,
        duration,
        warmup,
        body_bytes: crate::cli::DEFAULT_BODY_BYTES,
        json: None,
        connect_rate,
        connect_timeout: 30.0,
        // Past the gateway's 10 s send timeout: an unanswered send is then a silent drop, not a
        // late answer. A settled run ends its grace at once.
        grace: 11.0,
        threads: None,
        devices: 1,
        processes: 0,
        protocol: dialect,
        hdr_log: None,
        plot: None,
        first_client: 0,
        ledger: false,
    }
    .validate(fd_limit)
    .map_err(|e| anyhow::anyhow!(e.join("; ")))
}

/// Every process's samples (RSS, open files) while a closure runs, one every 100 ms.
fn with_samples<T>(
    pids: &[(String, u32)],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<(T, Vec<Vec<procstat::ProcSample>>)> {
    let series = Arc::new(Mutex::new(vec![Vec::new(); pids.len()]));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (series, stop, pids) = (series.clone(), stop.clone(), pids.to_vec());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for (i, (_, pid)) in pids.iter().enumerate() {
                    if let Some(s) = procstat::sample(*pid) {
                        if let Ok(mut p) = series.lock() {
                            p[i].push(s);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let out = f();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let series = series.lock().map(|p| p.clone()).unwrap_or_default();
    Ok((out?, series))
}

fn step_of(rate: f64, r: &Report, bound_ms: f64) -> Step {
    let ms = |us: u64| us as f64 / 1e3;
    let m = &r.messages;
    let p99 = ms(r.latency_us.delivery.p99);
    Step {
        rate,
        delivery_p50_ms: ms(r.latency_us.delivery.p50),
        delivery_p99_ms: p99,
        delivery_p999_ms: ms(r.latency_us.delivery.p999),
        ack_p99_ms: ms(r.latency_us.ack.p99),
        receive_rate: m.receive_rate,
        clean: r.clean(),
        passed: r.clean() && p99 < bound_ms && r.latency_us.delivery.count > 0,
        silent_drops: m.silent_drops,
        lost: m.lost,
        missing_acks: m.missing_acks,
        failed_acks: m.failed,
        unsent: m.unsent,
    }
}

fn measure(
    args: &CompareArgs,
    rt: &tokio::runtime::Runtime,
    stack: &Stack,
    dialect: Dialect,
    duration: f64,
    fd_limit: u64,
) -> anyhow::Result<SystemFigures> {
    let loadavg_before = loadavg();
    // Servers only: Redis is the same program on both sides and holds no per-client state for
    // either (the peer's Redis carries pub/sub only; Connect's the registry, counted apart).
    let servers: Vec<(String, u32)> = stack
        .pids()
        .into_iter()
        .filter(|(n, _)| n != "redis")
        .collect();
    let before: Vec<u64> = servers
        .iter()
        .map(|(_, p)| procstat::sample(*p).map_or(0, |s| s.rss_bytes))
        .collect();

    // 1. Connect storm, then idle.
    eprintln!(
        "perf compare: {dialect:?}: connect storm of {} clients, idle",
        args.idle_clients
    );
    let idle_phase = Phase {
        clients: args.idle_clients,
        rate: 1.0,
        duration: args.idle_seconds,
        warmup: 0.0,
        connect_rate: 0.0,
    };
    let cfg = load_config(&stack.urls, dialect, idle_phase, fd_limit)?;
    let (idle, series) = with_samples(&servers, || crate::multi::run(&cfg, rt))?;
    let n = args.idle_clients as f64;
    let per_conn = |rss: u64, b: u64| (rss.saturating_sub(b) as f64 / n).round();
    let by_process: Vec<(String, f64)> = servers
        .iter()
        .zip(series.iter().zip(&before))
        .map(|((name, _), (s, b))| {
            let plateau = procstat::plateau_rss(s).unwrap_or(0);
            (name.clone(), per_conn(plateau, *b))
        })
        .collect();
    let peak_per_conn: f64 = series
        .iter()
        .zip(&before)
        .map(|(s, b)| per_conn(s.iter().map(|x| x.rss_bytes).max().unwrap_or(0), *b))
        .sum();
    let rss_per_conn = by_process.iter().map(|p| p.1).sum::<f64>();
    let mut silent = idle.messages.silent_drops;

    // 2. The sweep.
    let quick = args.quick;
    let warmup = if quick { 1.0 } else { 2.0 };
    let mut sweep: Vec<Step> = Vec::new();
    let run_at = |rate: f64, sweep: &mut Vec<Step>| -> anyhow::Result<bool> {
        let phase = Phase {
            clients: args.clients,
            rate,
            duration,
            warmup,
            connect_rate: crate::cli::DEFAULT_CONNECT_RATE,
        };
        let cfg = load_config(&stack.urls, dialect, phase, fd_limit)?;
        let r = crate::multi::run(&cfg, rt)?;
        let s = step_of(rate, &r, args.p99_ms);
        eprintln!(
            "perf compare: {dialect:?} {rate:.0} msg/s: delivery p99 {:.2} ms, received {:.0}/s, silent drops {}, {} (load {})",
            s.delivery_p99_ms,
            s.receive_rate,
            s.silent_drops,
            if s.passed { "pass" } else { "FAIL" },
            loadavg()
        );
        let passed = s.passed;
        sweep.push(s);
        Ok(passed)
    };
    // A rate fails when it fails twice in a row on latency alone (this machine is shared, one
    // stall can push one run's P99 over); any silent drop or error fails it at once.
    let try_rate = |rate: f64, sweep: &mut Vec<Step>| -> anyhow::Result<bool> {
        if run_at(rate, sweep)? {
            return Ok(true);
        }
        let only_latency = sweep.last().is_some_and(|s| s.clean);
        if only_latency {
            return run_at(rate, sweep);
        }
        Ok(false)
    };
    let mut best: Option<f64> = None;
    let mut fail: Option<f64> = None;
    let mut rate = args.common_rate;
    if try_rate(rate, &mut sweep)? {
        best = Some(rate);
        while rate * 2.0 <= args.max_rate {
            rate *= 2.0;
            if try_rate(rate, &mut sweep)? {
                best = Some(rate);
            } else {
                fail = Some(rate);
                break;
            }
        }
    } else {
        // Below the common rate: halve until a rate passes.
        fail = Some(rate);
        while rate > args.common_rate / 16.0 {
            rate /= 2.0;
            if try_rate(rate, &mut sweep)? {
                best = Some(rate);
                break;
            }
            fail = Some(rate);
        }
    }
    let refinements = if quick { 1 } else { 3 };
    if let (Some(mut lo), Some(mut hi)) = (best, fail) {
        for _ in 0..refinements {
            let mid = ((lo + hi) / 2.0 / 50.0).round() * 50.0;
            if mid <= lo || mid >= hi {
                break;
            }
            if try_rate(mid, &mut sweep)? {
                lo = mid;
                best = Some(mid);
            } else {
                hi = mid;
            }
        }
    }
    silent += sweep.iter().map(|s| s.silent_drops).sum::<u64>();
    let common = sweep.first().filter(|s| s.rate == args.common_rate);
    Ok(SystemFigures {
        max_rate_p99_under_50ms: best,
        p99_ms_at_common_rate: common.map(|s| s.delivery_p99_ms),
        p999_ms_at_common_rate: common.map(|s| s.delivery_p999_ms),
        rss_bytes_per_idle_connection: rss_per_conn.round(),
        rss_bytes_per_connection_peak: peak_per_conn,
        connects_per_second: idle.connections.connects_per_second,
        silent_drops: silent,
        idle_clients_up: idle.connections.connected,
        rss_bytes_per_idle_connection_by_process: by_process,
        sweep,
        loadavg_before,
        loadavg_after: loadavg(),
    })
}

/// One cell of the table from a system's figures.
type Pick<'a> = dyn Fn(&SystemFigures) -> String + 'a;

/// The comparison as a terminal table.
pub fn table(c: &Comparison) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    let col = |f: &Option<SystemFigures>, pick: &Pick<'_>| f.as_ref().map_or("-".to_string(), pick);
    let _ = writeln!(
        s,
        "\nperf compare{}: {} clients ({} in the storm and idle phase), common rate {} msg/s, P99 bound {} ms, {} s per rate",
        if c.quick { " --quick" } else { "" },
        c.clients,
        c.idle_clients,
        c.common_rate,
        c.p99_bound_ms,
        c.duration_s
    );
    let _ = writeln!(
        s,
        "{:<34} {:>14} {:>14} {:>10}",
        "", "connect", "socket.io", "ratio"
    );
    let rows: [(&str, &Pick<'_>, Option<f64>); 5] = [
        (
            "max rate, delivery P99 < bound",
            &|f| opt(f.max_rate_p99_under_50ms, 0),
            c.ratios.max_rate,
        ),
        (
            "delivery P99 at common rate, ms",
            &|f| opt(f.p99_ms_at_common_rate, 2),
            c.ratios.p99_at_common_rate,
        ),
        (
            "RSS per idle connection, bytes",
            &|f| format!("{:.0}", f.rss_bytes_per_idle_connection),
            c.ratios.rss_per_idle_connection,
        ),
        (
            "connects per second",
            &|f| format!("{:.0}", f.connects_per_second),
            c.ratios.connects_per_second,
        ),
        (
            "silent drops (all runs)",
            &|f| f.silent_drops.to_string(),
            None,
        ),
    ];
    for (name, pick, ratio) in rows {
        let _ = writeln!(
            s,
            "{name:<34} {:>14} {:>14} {:>10}",
            col(&c.connect, pick),
            col(&c.socketio, pick),
            opt(ratio, 1)
        );
    }
    for (name, f) in [("connect", &c.connect), ("socket.io", &c.socketio)] {
        let Some(f) = f else { continue };
        let _ = writeln!(
            s,
            "\n{name} sweep (load before {}, after {}):",
            f.loadavg_before, f.loadavg_after
        );
        for p in &f.sweep {
            let _ = writeln!(
                s,
                "  {:>8.0} msg/s  delivery p50 {:>8.2} p99 {:>9.2} p99.9 {:>9.2} ms  received {:>9.1}/s  silent drops {:>6}  {}",
                p.rate,
                p.delivery_p50_ms,
                p.delivery_p99_ms,
                p.delivery_p999_ms,
                p.receive_rate,
                p.silent_drops,
                if p.passed { "pass" } else { "FAIL" }
            );
        }
    }
    s
}
