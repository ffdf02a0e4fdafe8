//! Flags and environment variables, read in one place. Everything is checked before a single
//! connection is opened, and every problem is reported at once.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio_tungstenite::tungstenite::http::Uri;

use crate::fdlimit;
use crate::protocol::Dialect;

/// Connections one perf process holds at most when a run is split over several (the open-file
/// limit here is 20,000 per process).
pub const MAX_PER_PROCESS: usize = 18_000;

pub const DEFAULT_CLIENTS: usize = 100;
pub const DEFAULT_RATE: f64 = 1_000.0;
pub const DEFAULT_DURATION_S: f64 = 10.0;
pub const DEFAULT_BODY_BYTES: usize = 100;
/// Dials per second: fast, but slow enough that 10k clients do not overflow a default accept
/// backlog (SYN drops would show up as 1 s+ connect-time outliers, a client-side artefact).
pub const DEFAULT_CONNECT_RATE: f64 = 2_000.0;
pub const DEFAULT_CONNECT_TIMEOUT_S: f64 = 10.0;
/// Time after the last scheduled send to wait for acks and deliveries before counting them
/// missing; well above the gateway's default 10 s send timeout would be safest, but a healthy
/// run settles in milliseconds and the wait ends early once everything is in.
pub const DEFAULT_GRACE_S: f64 = 5.0;
/// Largest body perf builds; a chat message, not a file (the gateway's default limit is 64 KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Load generator for Connect: speaks only the public client protocol.
#[derive(Parser, Debug)]
#[command(name = "perf", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open N clients in pairs, send at a fixed global rate (open loop) and report ack and
    /// delivery latency, throughput and message integrity.
    Load(LoadArgs),
    /// Start a local stack (Redis, router, gateways), run one scenario against it and report
    /// the load figures with the servers' CPU per message and memory per connection.
    Run(crate::run::RunArgs),
    /// Start Connect and the Socket.IO peer in turn on this machine, load both with the same
    /// schedule and write the side-by-side figures.
    Compare(crate::compare::CompareArgs),
    /// Faults under load (issue 7): for each fault a fresh local stack, load with the exact
    /// ledger, the fault, then the invariants and the recovery time against its bound. Exits 1
    /// if any invariant fails or a bound is exceeded.
    Faults(crate::faults::FaultsArgs),
    /// Draw the SVG plots again from a JSON report of `perf load`, `run` or `compare`.
    Plot(crate::replot::PlotArgs),
    /// One process of a multi-process `perf load` (started by perf itself; reads its part of
    /// the run on stdin and reports on stdout).
    #[command(hide = true)]
    Worker,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Gateway WebSocket URL (ws://HOST:PORT/ws). Repeat or comma-separate for several
    /// gateways: clients are spread round-robin, so partners sit on different gateways.
    #[arg(long = "url", env = "PERF_URL", value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// The gateways' JWT secret; perf signs one token per user with it.
    #[arg(long, env = "PERF_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Client connections (users u0..u{N-1}); even, since u(2k) and u(2k+1) message each other.
    #[arg(long, env = "PERF_CLIENTS", default_value_t = DEFAULT_CLIENTS)]
    pub clients: usize,
    /// Sends per second over all clients.
    #[arg(long, env = "PERF_RATE", default_value_t = DEFAULT_RATE)]
    pub rate: f64,
    /// Measured time, seconds.
    #[arg(long, env = "PERF_DURATION", default_value_t = DEFAULT_DURATION_S)]
    pub duration: f64,
    /// Seconds of sending at the full rate before measuring starts.
    #[arg(long, env = "PERF_WARMUP", default_value_t = 0.0)]
    pub warmup: f64,
    /// Length of each message body's JSON text.
    #[arg(long, env = "PERF_BODY_BYTES", default_value_t = DEFAULT_BODY_BYTES)]
    pub body_bytes: usize,
    /// Also write the report as JSON to this file.
    #[arg(long, env = "PERF_JSON")]
    pub json: Option<PathBuf>,
    /// New connections per second while connecting (0: all at once).
    #[arg(long, env = "PERF_CONNECT_RATE", default_value_t = DEFAULT_CONNECT_RATE)]
    pub connect_rate: f64,
    /// Seconds one connection may take to connect, upgrade and get its welcome.
    #[arg(long, env = "PERF_CONNECT_TIMEOUT", default_value_t = DEFAULT_CONNECT_TIMEOUT_S)]
    pub connect_timeout: f64,
    /// Seconds to wait after the schedule for outstanding acks and messages.
    #[arg(long, env = "PERF_GRACE", default_value_t = DEFAULT_GRACE_S)]
    pub grace: f64,
    /// Runtime worker threads per process (default: one per CPU).
    #[arg(long, env = "PERF_THREADS")]
    pub threads: Option<usize>,
    /// Sessions per user (multi-device recipients): every device of the recipient must get
    /// every message.
    #[arg(long, env = "PERF_DEVICES", default_value_t = 1)]
    pub devices: usize,
    /// Load-generating processes (0: as many as needed for at most 18,000 connections each).
    /// With several, process p dials from source address 127.0.0.(p+2) to loopback gateways.
    #[arg(long, env = "PERF_PROCESSES", default_value_t = 0)]
    pub processes: usize,
    /// Client protocol: `connect` (JSON over WebSocket) or `socketio` (Engine.IO v4).
    #[arg(long, env = "PERF_PROTOCOL", value_enum, default_value = "connect")]
    pub protocol: Dialect,
    /// Write HdrHistogram interval logs (one histogram per second) into this directory.
    #[arg(long, env = "PERF_HDR_LOG")]
    pub hdr_log: Option<PathBuf>,
    /// Write SVG plots (latency spectrum, throughput and P99 over time) into this directory.
    #[arg(long, env = "PERF_PLOT")]
    pub plot: Option<PathBuf>,
    /// Global index of the first connection (users from u{N / devices} on), so that runs
    /// alongside each other on the same gateways (e.g. connection churn next to a soak) use
    /// disjoint users. A multiple of 2 x devices.
    #[arg(long, env = "PERF_FIRST_CLIENT", default_value_t = 0)]
    pub first_client: usize,
    /// Keep the exact ledger (every send and receipt by id) and check issue 7's invariants
    /// after the run; one load process only.
    #[arg(long, env = "PERF_LEDGER")]
    pub ledger: bool,
}

/// A gateway URL, checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayUrl {
    pub url: String,
    /// `host:port` to resolve.
    pub authority: String,
}

/// A checked `perf load` configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoadConfig {
    pub urls: Vec<GatewayUrl>,
    pub secret: String,
    pub clients: usize,
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub body_bytes: usize,
    pub json: Option<PathBuf>,
    pub connect_rate: f64,
    pub connect_timeout: Duration,
    pub grace: Duration,
    pub threads: usize,
    pub devices: usize,
    /// Processes the run is split over (1: this one).
    pub processes: usize,
    pub dialect: Dialect,
    pub hdr_log: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    /// Global index of this process's first connection (0 unless a worker).
    pub offset: usize,
    /// Source address to bind before connecting (workers of a multi-process run).
    pub source_ip: Option<std::net::IpAddr>,
    /// Keep the exact ledger (`crate::ledger`).
    #[serde(default)]
    pub ledger: bool,
    /// Redial dropped connections (`perf faults`).
    #[serde(default)]
    pub reconnect: bool,
}

impl LoadArgs {
    /// Checks every flag; `fd_limit` is the open-file limit in force. Returns all problems.
    pub fn validate(&self, fd_limit: u64) -> Result<LoadConfig, Vec<String>> {
        let mut errs = Vec::new();
        let urls: Vec<GatewayUrl> = self
            .urls
            .iter()
            .filter_map(|u| parse_url(u).map_err(|e| errs.push(e)).ok())
            .collect();
        if self.urls.is_empty() {
            errs.push("--url: at least one gateway URL is needed".into());
        }
        if self.secret.is_empty() {
            errs.push("--secret: must not be empty".into());
        }
        let devices = self.devices.max(1);
        if self.devices == 0 || self.devices > 64 {
            errs.push(format!("--devices {}: 1 to 64", self.devices));
        }
        let unit = 2 * devices;
        if self.clients < unit || !self.clients.is_multiple_of(unit) {
            errs.push(format!(
                "--clients {}: must be a multiple of {unit} (users message each other in pairs, \
                 {devices} connection(s) per user)",
                self.clients
            ));
        }
        let max = (fdlimit::max_clients(fd_limit) as usize).min(MAX_PER_PROCESS);
        let processes = if self.processes == 0 {
            self.clients.div_ceil(max.max(1)).max(1)
        } else {
            self.processes
        };
        let biggest = crate::plan::split(self.clients, devices, processes)
            .iter()
            .map(|p| p.1)
            .max()
            .unwrap_or(0);
        if biggest > max {
            errs.push(format!(
                "--clients {} over {processes} process(es): {biggest} connections in one, but \
                 the open-file limit is {fd_limit} ({max} connections per process); raise \
                 --processes",
                self.clients
            ));
        }
        if !self.first_client.is_multiple_of(unit) {
            errs.push(format!(
                "--first-client {}: must be a multiple of {unit} (whole user pairs)",
                self.first_client
            ));
        }
        if self.ledger && processes > 1 {
            errs.push(format!(
                "--ledger: one load process only ({processes} needed for --clients {})",
                self.clients
            ));
        }
        if processes > 250 {
            errs.push(format!("--processes {processes}: at most 250"));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            errs.push(format!("--rate {}: must be a positive number", self.rate));
        }
        let duration = secs("--duration", self.duration, false, &mut errs);
        let warmup = secs("--warmup", self.warmup, true, &mut errs);
        let connect_timeout = secs("--connect-timeout", self.connect_timeout, false, &mut errs);
        let grace = secs("--grace", self.grace, true, &mut errs);
        if self.body_bytes > MAX_BODY_BYTES {
            errs.push(format!(
                "--body-bytes {}: at most {MAX_BODY_BYTES}",
                self.body_bytes
            ));
        }
        if !(self.connect_rate.is_finite() && self.connect_rate >= 0.0) {
            errs.push(format!(
                "--connect-rate {}: must be 0 (unpaced) or positive",
                self.connect_rate
            ));
        }
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            errs.push("--threads: must be at least 1".into());
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(LoadConfig {
            urls,
            secret: self.secret.clone(),
            clients: self.clients,
            rate: self.rate,
            duration,
            warmup,
            body_bytes: self.body_bytes,
            json: self.json.clone(),
            connect_rate: self.connect_rate,
            connect_timeout,
            grace,
            threads,
            devices,
            processes,
            dialect: self.protocol,
            hdr_log: self.hdr_log.clone(),
            plot: self.plot.clone(),
            offset: self.first_client,
            source_ip: None,
            ledger: self.ledger,
            reconnect: false,
        })
    }
}

fn secs(flag: &str, v: f64, zero_ok: bool, errs: &mut Vec<String>) -> Duration {
    let ok = v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) && v < 1e9;
    if !ok {
        let want = if zero_ok { "0 or more" } else { "more than 0" };
        errs.push(format!("{flag} {v}: seconds, {want}"));
        return Duration::ZERO;
    }
    Duration::from_secs_f64(v)
}

/// Accepts `ws://host[:port]/path[?query]` (TLS is the load balancer's job, not the gateway's).
fn parse_url(url: &str) -> Result<GatewayUrl, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("--url {url}: not a URL ({e})"))?;
    if uri.scheme_str() != Some("ws") {
        return Err(format!("--url {url}: only ws:// is supported"));
    }
    let host = uri.host().ok_or_else(|| format!("--url {url}: no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    // An IPv6 literal keeps its brackets in `host()`, so this is resolvable as is.
    Ok(GatewayUrl {
        url: url.to_owned(),
        authority: format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> LoadArgs {
        let mut argv = vec!["perf", "load"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Load(a) => a,
            other => panic!("not load: {other:?}"),
        }
    }

    #[test]
    fn run_scenarios_parse() {
        let cli = Cli::try_parse_from(["perf", "run", "--scenario", "storm", "--clients", "10"]);
        match cli.unwrap().command {
            Command::Run(r) => {
                assert_eq!(r.scenario, crate::run::Scenario::Storm);
                assert_eq!(r.clients, 10);
                assert_eq!(r.gateways, 2);
            }
            other => panic!("not run: {other:?}"),
        }
        assert!(Cli::try_parse_from(["perf", "run", "--scenario", "nope"]).is_err());
    }

    #[test]
    fn defaults_and_several_urls() {
        let a = parse(&[
            "--url",
            "ws://127.0.0.1:8080/ws",
            "--url",
            "ws://localhost:8081/ws,ws://[::1]/ws",
            "--secret",
            "s",
        ]);
        let c = a.validate(20_000).unwrap();
        assert_eq!(c.urls.len(), 3);
        assert_eq!(c.urls[0].authority, "127.0.0.1:8080");
        assert_eq!(c.urls[1].authority, "localhost:8081");
        assert_eq!(c.urls[2].authority, "[::1]:80");
        assert_eq!(c.clients, DEFAULT_CLIENTS);
        assert_eq!(c.rate, DEFAULT_RATE);
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.warmup, Duration::ZERO);
        assert_eq!(c.body_bytes, 100);
        assert!(c.threads >= 1);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let a = parse(&[
            "--url",
            "http://x/ws",
            "--secret",
            "",
            "--clients",
            "3",
            "--rate",
            "0",
            "--duration=-1",
            "--connect-rate=-5",
            "--body-bytes",
            "99999999",
        ]);
        let errs = a.validate(20_000).unwrap_err();
        let all = errs.join("\n");
        for flag in [
            "--url",
            "--secret",
            "--clients",
            "--rate",
            "--duration",
            "--connect-rate",
            "--body-bytes",
        ] {
            assert!(all.contains(flag), "{flag} not reported in:\n{all}");
        }
    }

    #[test]
    fn first_client_offsets_users_in_whole_pairs() {
        let a = parse(&[
            "--url",
            "ws://h/ws",
            "--secret",
            "s",
            "--first-client",
            "1000",
        ]);
        assert_eq!(a.validate(20_000).unwrap().offset, 1000);
        let a = parse(&["--url", "ws://h/ws", "--secret", "s", "--first-client", "3"]);
        let errs = a.validate(20_000).unwrap_err();
        assert!(errs[0].contains("--first-client"), "{errs:?}");
    }

    #[test]
    fn clients_are_bounded_by_the_file_limit() {
        let a = parse(&[
            "--url",
            "ws://h/ws",
            "--secret",
            "s",
            "--clients",
            "20000",
            "--processes",
            "1",
        ]);
        let errs = a.validate(20_000).unwrap_err();
        assert!(errs[0].contains("open-file limit"), "{errs:?}");
        // By default the run is split over enough processes.
        let a = parse(&["--url", "ws://h/ws", "--secret", "s", "--clients", "40000"]);
        assert_eq!(a.validate(20_000).unwrap().processes, 3);
        let a = parse(&["--url", "ws://h/ws", "--secret", "s", "--clients", "18000"]);
        assert_eq!(a.validate(20_000).unwrap().processes, 1);
    }

    #[test]
    fn socketio_protocol_and_processes_parse() {
        let a = parse(&[
            "--url",
            "ws://h/socket.io/?EIO=4&transport=websocket",
            "--secret",
            "s",
            "--clients",
            "12",
            "--protocol",
            "socketio",
            "--processes",
            "3",
        ]);
        let c = a.validate(20_000).unwrap();
        assert_eq!(c.dialect, Dialect::Socketio);
        assert_eq!(c.processes, 3);
        assert_eq!(c.offset, 0);
        // A checked configuration crosses to a worker as JSON.
        let back: LoadConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn ledger_needs_one_process() {
        let a = parse(&["--url", "ws://h/ws", "--secret", "s", "--ledger"]);
        assert!(a.validate(20_000).unwrap().ledger);
        let a = parse(&[
            "--url",
            "ws://h/ws",
            "--secret",
            "s",
            "--clients",
            "40000",
            "--ledger",
        ]);
        let errs = a.validate(20_000).unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("--ledger")), "{errs:?}");
    }

    #[test]
    fn devices_need_whole_pairs() {
        let a = parse(&[
            "--url",
            "ws://h/ws",
            "--secret",
            "s",
            "--clients",
            "6",
            "--devices",
            "2",
        ]);
        assert!(a.validate(20_000).unwrap_err()[0].contains("multiple of 4"));
        let a = parse(&[
            "--url",
            "ws://h/ws",
            "--secret",
            "s",
            "--clients",
            "8",
            "--devices",
            "2",
        ]);
        assert_eq!(a.validate(20_000).unwrap().devices, 2);
    }
}
