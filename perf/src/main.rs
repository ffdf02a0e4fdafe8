//! `perf`: a load generator for Connect. It speaks only the public client protocol (WebSocket +
//! JSON, see `docs/protocol.md`), so it measures what a client sees.
//!
//! `perf load` opens N clients in pairs, sends on an open-loop schedule at a fixed global rate,
//! and reports ack latency (intended send -> ack) and delivery latency (intended send ->
//! recipient), measured from each send's *intended* time so a stalled server cannot hide its
//! stall (no coordinated omission), plus throughput and message integrity: failed and missing
//! acks, lost, duplicated and reordered messages.
//!
//! ```text
//! perf load --url ws://127.0.0.1:8080/ws [--url ws://...] --secret S --clients 1000 \
//!           --rate 20000 --duration 10 [--warmup 2] [--body-bytes 100] [--devices K] \
//!           [--processes N] [--protocol connect|socketio] [--json out.json] \
//!           [--hdr-log DIR] [--plot DIR] [--ledger]
//! perf run --scenario steady|idle|storm|sweep [--clients N] [--rate R] [--gateways G] ...
//! perf compare [--quick] --json compare.json [--plot DIR]
//! perf faults [--quick] [--only gateway-kill,router-stop,...] [--json faults.json]
//! perf plot --from report.json --out DIR
//! ```
//!
//! Runs of more than 18,000 connections are split over worker processes (`perf worker`, started
//! by perf itself), each dialling from its own loopback source address; their histograms are
//! merged exactly.
//!
//! perf shares the machine's cores with whatever it measures when both run on one host; its
//! `send lag` row (intended -> written) shows when the generator itself fell behind.
//!
//! # Layout
//!
//! * `cli`: flags and environment variables, checked all at once into a `LoadConfig`.
//! * `load`: the run: connect everyone, start the schedule, progress, grace, stop, report.
//! * `conn`: one connection's I/O: dial, upgrade, welcome, then drive a `Session`.
//! * `session`: one connection's state with no I/O: due sends, outstanding acks, arrivals.
//! * `schedule`: the open-loop send slots of every client, fixed in advance.
//! * `pacer`: the thread that wakes each connection when a slot of its is due.
//! * `plan`: users, partners and which gateway each connection dials.
//! * `protocol`: the frames perf writes (with the probe body) and parses.
//! * `order`: per-sender sequence tracking (late and duplicate messages).
//! * `ledger`: the exact ledger (`--ledger`): every send and receipt by id, and the check of
//!   the delivery invariants after a run.
//! * `stats`: shared counters, tallies and striped HdrHistograms.
//! * `report`: the final figures as a table and as JSON.
//! * `clock`: the process-wide time base all timestamps count from.
//! * `fdlimit`: the open-file limit that bounds clients per process.
//! * `run`: `perf run --scenario steady|idle|storm`: a local stack, one scenario, server figures.
//! * `stack`: the local stack `perf run` starts (redis-server, router, gateways) and stops.
//! * `procstat`: a server's CPU time, RSS and open files from `/proc`.
//! * `multi`: splitting a run over worker processes (source addresses 127.0.0.x) and merging
//!   their histograms.
//! * `eio`: the Socket.IO / Engine.IO v4 client dialect (`--protocol socketio`).
//! * `plot`: SVG plots and HdrHistogram interval logs.
//! * `compare`: `perf compare`: Connect and the Socket.IO peer (`perf/socketio/`) side by side.
//! * `replot`: `perf plot`: the plots again from a saved JSON report.
//! * `faults`: `perf faults`: each fault of issue 7 under load on its own local stack, checked
//!   by the ledger, recovery measured against a bound; the mid-frame link-reset proxy.

mod cli;
mod clock;
mod compare;
mod conn;
mod eio;
mod faults;
mod fdlimit;
mod ledger;
mod load;
mod multi;
mod order;
mod pacer;
mod plan;
mod plot;
mod procstat;
mod protocol;
mod replot;
mod report;
mod run;
mod schedule;
mod session;
mod stack;
mod stats;

use anyhow::Context as _;
use clap::Parser as _;

use crate::cli::{Cli, Command};

fn main() -> anyhow::Result<()> {
    // Fix the time base before any timestamp is taken.
    clock::base();
    match Cli::parse().command {
        Command::Load(args) => {
            let fd_limit = fdlimit::raise().context("reading the open-file limit")?;
            let cfg = match args.validate(fd_limit) {
                Ok(cfg) => cfg,
                Err(errs) => {
                    for e in errs {
                        eprintln!("perf: {e}");
                    }
                    // Same exit code as clap's own usage errors.
                    std::process::exit(2);
                }
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cfg.threads)
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            let report = multi::run(&cfg, &rt)?;
            print!("{}", report.table());
            write_json(cfg.json.as_deref(), &report)?;
            outputs(
                &report,
                cfg.hdr_log.as_deref(),
                cfg.plot.as_deref(),
                "perf load",
            )
        }
        Command::Run(args) => {
            let fd_limit = fdlimit::raise().context("reading the open-file limit")?;
            let report = run::run(&args, fd_limit)?;
            print!("{}", report.table());
            write_json(args.json.as_deref(), &report)?;
            let title = format!("perf run {:?}", args.scenario).to_lowercase();
            outputs(
                &report.load,
                args.hdr_log.as_deref(),
                args.plot.as_deref(),
                &title,
            )?;
            if let (Some(dir), false) = (&args.plot, report.sweep.is_empty()) {
                let pts = report
                    .sweep
                    .iter()
                    .map(|p| (p.rate, p.delivery_p99_ms))
                    .collect();
                plot::sweep(
                    &dir.join("sweep.svg"),
                    "rate sweep: delivery P99",
                    &[("connect", pts)],
                    args.p99_ms,
                )?;
            }
            Ok(())
        }
        Command::Compare(args) => {
            let fd_limit = fdlimit::raise().context("reading the open-file limit")?;
            compare::run(&args, fd_limit)
        }
        Command::Faults(args) => {
            let fd_limit = fdlimit::raise().context("reading the open-file limit")?;
            if !faults::run(&args, fd_limit)? {
                eprintln!("perf faults: FAILED (an invariant or a recovery bound)");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Plot(args) => replot::run(&args),
        Command::Worker => {
            fdlimit::raise().context("reading the open-file limit")?;
            multi::worker_main()
        }
    }
}

/// Writes `value` as pretty JSON to `path`, if given.
pub fn write_json(
    path: Option<&std::path::Path>,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(value)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Interval logs and plots of one load report, where asked for.
fn outputs(
    report: &report::Report,
    hdr_log: Option<&std::path::Path>,
    plot_dir: Option<&std::path::Path>,
    title: &str,
) -> anyhow::Result<()> {
    if let Some(dir) = hdr_log {
        plot::hdr_logs(dir, report)?;
        eprintln!("perf: interval logs in {}", dir.display());
    }
    if let Some(dir) = plot_dir {
        plot::run_plots(dir, report, title)?;
        eprintln!("perf: plots in {}", dir.display());
    }
    Ok(())
}
