//! Opening one connection: resolve, TCP connect, the TLS handshake if configured, then
//! `AUTH`/`SELECT` if configured, all within [`Config::connect_timeout`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future::or;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use runtime::net::TcpConn as TcpStream;

use crate::codec::{encode_command, Decoder};
use crate::tls::{self, Stream, TlsStream};
use crate::{Config, Reply};

/// Connects, runs the TLS handshake if configured, negotiates the protocol and logs in
/// (`HELLO 3` / `AUTH`) and selects the database, all within `connect_timeout`. Returns the
/// stream and whether it speaks RESP3.
pub(crate) async fn connect(cfg: &Config) -> Result<(Stream, bool), String> {
    let timeout = cfg.connect_timeout.max(Duration::from_millis(1));
    let tls = match &cfg.tls {
        Some(t) => Some((tls::client_config(t)?, tls::server_name(t, &cfg.addr)?)),
        None => None,
    };
    let addr = resolve(&cfg.addr)?;
    let tcp = TcpStream::connect(addr, timeout)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let late = async {
        runtime::rt::sleep(timeout).await;
        Err(format!("handshake took over {timeout:?}"))
    };
    let setup = async {
        let stream = match tls {
            Some((config, name)) => Stream::Tls(Box::new(
                TlsStream::connect(tcp, config, name)
                    .await
                    .map_err(|e| format!("TLS handshake with {addr}: {e}"))?,
            )),
            None => Stream::Plain(tcp),
        };
        handshake(cfg, stream).await
    };
    or(setup, late).await
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("resolve {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("resolve {addr:?}: no address"))
}

/// Logs in and picks the protocol: `HELLO 3 [AUTH user password]` when [`Config::resp3`],
/// falling back to RESP2 when the server does not know `HELLO` or refuses protocol 3; then
/// `AUTH` (RESP2 with a password) and `SELECT` (db other than 0), pipelined. Returns the stream
/// and whether it speaks RESP3.
async fn handshake(cfg: &Config, mut stream: Stream) -> Result<(Stream, bool), String> {
    // The HELLO reply itself is RESP3; everything else is plain.
    let mut dec = Decoder::new(cfg.max_reply_bytes, cfg.max_array_len).with_resp3(true);
    let mut rbuf = BytesMut::new();
    let mut resp3 = false;
    if cfg.resp3 {
        let mut out = BytesMut::new();
        match &cfg.password {
            Some(pw) => {
                let user = cfg.username.as_deref().unwrap_or("default");
                encode_command(
                    &mut out,
                    &[b"HELLO", b"3", b"AUTH", user.as_bytes(), pw.as_bytes()],
                );
            }
            None => encode_command(&mut out, &[b"HELLO", b"3"]),
        }
        send(&mut stream, &out).await?;
        match read_reply(&mut stream, &mut dec, &mut rbuf).await? {
            Reply::Map(_) | Reply::Array(_) => resp3 = true,
            Reply::Error(e)
                if e.starts_with(b"NOPROTO") || e.starts_with(b"ERR unknown command") =>
            {
                tracing::debug!(addr = %cfg.addr, "no RESP3 (HELLO 3 refused); using RESP2");
            }
            Reply::Error(e) => {
                return Err(format!(
                    "handshake rejected: {}",
                    String::from_utf8_lossy(&e)
                ))
            }
            other => return Err(format!("unexpected HELLO reply {other:?}")),
        }
    }
    let mut out = BytesMut::new();
    let mut expected = 0;
    if let (Some(password), false) = (&cfg.password, resp3) {
        match &cfg.username {
            Some(user) => {
                encode_command(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()])
            }
            None => encode_command(&mut out, &[b"AUTH", password.as_bytes()]),
        }
        expected += 1;
    }
    if cfg.db != 0 {
        let db = crate::Int::from(i64::from(cfg.db));
        encode_command(&mut out, &[b"SELECT", db.as_ref()]);
        expected += 1;
    }
    if expected > 0 {
        send(&mut stream, &out).await?;
    }
    while expected > 0 {
        if let Reply::Error(e) = read_reply(&mut stream, &mut dec, &mut rbuf).await? {
            return Err(format!(
                "handshake rejected: {}",
                String::from_utf8_lossy(&e)
            ));
        }
        expected -= 1;
    }
    if !rbuf.is_empty() {
        return Err("unexpected bytes after handshake replies".into());
    }
    Ok((stream, resp3))
}

async fn send(stream: &mut Stream, bytes: &[u8]) -> Result<(), String> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("handshake write: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("handshake write: {e}"))
}

/// Reads until one reply is decoded.
async fn read_reply(
    stream: &mut Stream,
    dec: &mut Decoder,
    rbuf: &mut BytesMut,
) -> Result<Reply, String> {
    let mut scratch = [0u8; 512];
    loop {
        if let Some(reply) = dec.decode(rbuf).map_err(|e| format!("handshake: {e}"))? {
            return Ok(reply);
        }
        let n = stream
            .read(&mut scratch)
            .await
            .map_err(|e| format!("handshake read: {e}"))?;
        if n == 0 {
            return Err("connection closed during handshake".into());
        }
        rbuf.extend_from_slice(&scratch[..n]);
    }
}
