//! `gateway` binary: parse flags, start the shards, serve until SIGTERM/SIGINT, then drain.

use std::time::Duration;

use clap::Parser;

// `--features system-alloc` leaves the process on the system allocator, whose calls valgrind,
// LeakSanitizer and heaptrack intercept (mimalloc takes its memory from mmap, out of their sight).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = gateway::Args::parse();
    runtime::log::init(args.log_format == "json");
    let config = match args.validate() {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            std::process::exit(2);
        }
    };
    let drain = config.drain_timeout;
    let signals = ops::signals::block();
    let gw = gateway::Gateway::start(config)?;
    if let Some(a) = gw.admin_addr {
        println!("admin listening on {a}");
    }
    println!(
        "gateway listening on {} (internal {:?})",
        gw.client_addr, gw.internal_addrs
    );
    let sig = signals.wait();
    tracing::info!(signal = sig, timeout = ?drain, "draining");
    ops::drain::start(drain);
    // The shards stop by themselves; this bounds a drain that cannot finish.
    std::thread::spawn(move || {
        std::thread::sleep(drain + Duration::from_secs(1));
        tracing::warn!("drain timeout passed; exiting");
        std::process::exit(0);
    });
    gw.join()?;
    tracing::info!("drained; exiting");
    Ok(())
}
