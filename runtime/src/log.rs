//! Log set-up shared by the binaries: `tracing` to stderr, filtered by `CONNECT_LOG`
//! (default `info`); plain text (colours only on a terminal) or one JSON object per line for
//! log shippers (CloudWatch).

/// Installs the global subscriber; call once at the start of `main`.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONNECT_LOG")
        .unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().with_current_span(false).init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
