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
//!           --rate 20000 --duration 10 [--warmup 2] [--body-bytes 100] [--json out.json]
//! ```
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
//! * `stats`: shared counters, tallies and striped HdrHistograms.
//! * `report`: the final figures as a table and as JSON.
//! * `clock`: the process-wide time base all timestamps count from.
//! * `fdlimit`: the open-file limit that bounds clients per process.
//! * `run`: `perf run --scenario steady|idle|storm`: a local stack, one scenario, server figures.
//! * `stack`: the local stack `perf run` starts (redis-server, router, gateways) and stops.
//! * `procstat`: a server's CPU time, RSS and open files from `/proc`.

mod cli;
mod clock;
mod conn;
mod fdlimit;
mod load;
mod order;
mod pacer;
mod plan;
mod procstat;
mod protocol;
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
            let report = rt.block_on(load::run(&cfg))?;
            print!("{}", report.table());
            if let Some(path) = &cfg.json {
                let json = serde_json::to_string_pretty(&report)?;
                std::fs::write(path, json + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
        Command::Run(args) => {
            let fd_limit = fdlimit::raise().context("reading the open-file limit")?;
            let report = run::run(&args, fd_limit)?;
            print!("{}", report.table());
            if let Some(path) = &args.json {
                let json = serde_json::to_string_pretty(&report)?;
                std::fs::write(path, json + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(())
        }
    }
}
