//! The admin port: `/livez` (the process answers), `/readyz` (it wants traffic: not draining and
//! able to serve), `/metrics` (Prometheus text). A plain blocking thread, off the shards:
//! scrapes and probes are a few per second.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// What the admin port reports.
pub trait AdminState: Send + Sync + 'static {
    /// `Ok` when the process should get traffic; `Err(why)` otherwise.
    fn ready(&self) -> Result<(), String>;
    /// Appends every metric in Prometheus text format.
    fn render(&self, out: &mut String);
}

/// Binds `addr` now (so a bad address fails start-up) and serves it on a thread.
pub fn start(addr: SocketAddr, state: Arc<dyn AdminState>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if let Err(e) = serve(s, &*state) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(bound)
}

fn serve(mut s: TcpStream, state: &dyn AdminState) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let r = s.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let line = buf[..n].split(|&b| b == b'\n').next().unwrap_or(b"");
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
    let (status, body, ctype) = match (method, path) {
        (b"GET", b"/livez") => ("200 OK", "ok\n".to_string(), "text/plain"),
        (b"GET", b"/readyz") => match state.ready() {
            Ok(()) => ("200 OK", "ready\n".to_string(), "text/plain"),
            Err(why) => ("503 Service Unavailable", format!("{why}\n"), "text/plain"),
        },
        (b"GET", b"/metrics") => {
            let mut out = String::with_capacity(8192);
            state.render(&mut out);
            ("200 OK", out, "text/plain; version=0.0.4")
        }
        (b"GET", _) => ("404 Not Found", "not found\n".to_string(), "text/plain"),
        _ => (
            "405 Method Not Allowed",
            "GET only\n".to_string(),
            "text/plain",
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct S(AtomicBool);
    impl AdminState for S {
        fn ready(&self) -> Result<(), String> {
            if self.0.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("draining".into())
            }
        }
        fn render(&self, out: &mut String) {
            out.push_str("x_total 7\n");
        }
    }

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    }

    #[test]
    fn serves_probes_and_metrics() {
        let state = Arc::new(S(AtomicBool::new(true)));
        let addr = start("127.0.0.1:0".parse().unwrap(), state.clone()).unwrap();
        assert!(get(addr, "/livez").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").ends_with("x_total 7\n"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        state.0.store(false, Ordering::SeqCst);
        let r = get(addr, "/readyz");
        assert!(
            r.starts_with("HTTP/1.1 503") && r.ends_with("draining\n"),
            "{r}"
        );
    }
}
