//! `router` binary: parse flags, start the shards, run until killed.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    runtime::log::init();
    let config = match router::Args::parse().validate() {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            std::process::exit(2);
        }
    };
    let r = router::Router::start(config)?;
    println!("router listening on {}", r.addr);
    r.join()?;
    Ok(())
}
