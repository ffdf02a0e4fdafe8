//! `connect`: the whole system in one process for a local run: a router and a gateway sharing
//! the embedded `memory://` registry (or a real Redis with `--registry redis://...`). Prints the
//! WebSocket URL and ready-to-use dev tokens, then runs until Ctrl-C. With the embedded registry
//! it also serves the demo chat page and the dev endpoints (gateway dev mode).

use std::net::SocketAddr;

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Local all-in-one Connect.
#[derive(Parser, Debug)]
#[command(name = "connect", version, about)]
struct Args {
    /// Client WebSocket listen address.
    #[arg(long, env = "CONNECT_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Router listen address (gateways of other processes may join it).
    #[arg(long, env = "CONNECT_ROUTER_LISTEN", default_value = "127.0.0.1:7100")]
    router_listen: SocketAddr,
    /// Gateway internal listen address (shard i: port+i; 0 = any free ports).
    #[arg(long, env = "CONNECT_INTERNAL_LISTEN", default_value = "127.0.0.1:0")]
    internal_listen: SocketAddr,
    /// Session registry: memory:// (embedded) or redis://host:port[/db].
    #[arg(long, env = "CONNECT_REGISTRY", default_value = "memory://")]
    registry: String,
    /// JWT secret (default: a random one, printed tokens use it).
    #[arg(long, env = "CONNECT_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Shards per role (default: one per core).
    #[arg(long, env = "CONNECT_SHARDS")]
    shards: Option<usize>,
    /// Event loop: auto (io_uring where allowed, else epoll), uring, or epoll.
    #[arg(long, env = "CONNECT_IO", default_value = "auto")]
    io: String,
    /// Users to print dev tokens for.
    #[arg(long, value_delimiter = ',', default_value = "alice,bob")]
    dev_users: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    runtime::log::init(false);
    let a = Args::parse();
    let secret = a.jwt_secret.clone().unwrap_or_else(|| {
        format!(
            "dev-{:016x}{:016x}",
            runtime::clock::random_u64(),
            runtime::clock::random_u64()
        )
    });
    let shards = a.shards.unwrap_or_else(gateway::config::default_shards);
    let signals = ops::signals::block();

    let link_secret = format!(
        "link-{:016x}{:016x}",
        runtime::clock::random_u64(),
        runtime::clock::random_u64()
    );
    let mut rc = router::Config::new(a.router_listen, &a.registry, shards);
    rc.pin = false;
    rc.link_secret = Some(std::sync::Arc::from(link_secret.as_bytes()));
    rc.io = match a.io.parse() {
        Ok(io) => io,
        Err(e) => anyhow::bail!("--io {e}"),
    };
    let router = router::Router::start(rc)?;

    let gw_args = gateway::Args::try_parse_from([
        "gateway",
        "--listen",
        &a.listen.to_string(),
        "--internal-listen",
        &a.internal_listen.to_string(),
        "--router",
        &router.addr.to_string(),
        "--registry",
        &a.registry,
        "--jwt-secret",
        &secret,
        "--shards",
        &shards.to_string(),
        "--io",
        &a.io,
        "--admin-listen",
        "off",
        "--link-secret",
        &link_secret,
    ])?;
    let mut gc = match gw_args.validate() {
        Ok(c) => c,
        Err(errors) => anyhow::bail!("{}", errors.join("; ")),
    };
    gc.pin = false;
    // The demo page and /dev/token (which signs a token for anyone) only with the embedded
    // registry: a local, single-process run, never a deployment.
    gc.dev_mode = a.registry.starts_with("memory://");
    let dev_mode = gc.dev_mode;
    let gw = gateway::Gateway::start(gc)?;

    let url = format!("ws://{}/ws", gw.client_addr);
    let now = runtime::clock::unix_secs();
    println!(
        "Connect is running: router {}, registry {}",
        router.addr, a.registry
    );
    println!("WebSocket URL: {url}  (token in ?token= or Authorization: Bearer)");
    println!("Health:        http://{}/healthz", gw.client_addr);
    if dev_mode {
        println!(
            "Demo chat:     http://{}/  (open it in two tabs as two users)",
            gw.client_addr
        );
        if !gw.client_addr.ip().is_loopback() {
            println!(
                "Warning: {} is not a loopback address; anyone who reaches it can get a token \
                 for any user from /dev/token",
                gw.client_addr
            );
        }
    }
    for u in &a.dev_users {
        let t = auth::dev_token(secret.as_bytes(), u, 24 * 3600, now);
        println!("{u:>6}: {url}?token={t}");
    }
    println!(
        "Try:  websocat '{url}?token=...'  then type {{\"type\":\"send\",\"id\":1,\"to\":\"bob\",\"body\":\"hi\"}}"
    );
    println!("Ctrl-C stops.");

    let sig = signals.wait();
    eprintln!("{sig}: stopping");
    std::process::exit(0);
}
