//! `gateway` binary: parse flags, start the shards, run until killed.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    runtime::log::init();
    let config = match gateway::Args::parse().validate() {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            std::process::exit(2);
        }
    };
    let gw = gateway::Gateway::start(config)?;
    println!(
        "gateway listening on {} (internal {:?})",
        gw.client_addr, gw.internal_addrs
    );
    gw.join()?;
    Ok(())
}
