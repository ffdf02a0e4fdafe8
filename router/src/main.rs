//! `router` binary: parse flags, start the shards, serve until SIGTERM/SIGINT, then drain.

use std::time::Duration;

use clap::Parser;

// `system-alloc` leaves the process on the system allocator, whose calls valgrind and
// LeakSanitizer intercept (mimalloc takes its memory from mmap, out of their sight).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args = router::Args::parse();
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
    let r = router::Router::start(config)?;
    if let Some(a) = r.admin_addr {
        println!("admin listening on {a}");
    }
    println!("router listening on {}", r.addr);
    let sig = signals.wait();
    tracing::info!(signal = sig, timeout = ?drain, "draining");
    ops::drain::start(drain);
    std::thread::spawn(move || {
        std::thread::sleep(drain + Duration::from_secs(1));
        tracing::warn!("drain timeout passed; exiting");
        std::process::exit(0);
    });
    r.join()?;
    tracing::info!("drained; exiting");
    Ok(())
}
