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

/// Connects, runs the TLS handshake if configured, sends `AUTH`/`SELECT` if configured and
/// checks their replies, all within `connect_timeout`.
pub(crate) async fn connect(cfg: &Config) -> Result<Stream, String> {
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

async fn handshake(cfg: &Config, mut stream: Stream) -> Result<Stream, String> {
    let mut out = BytesMut::new();
    let mut expected = 0;
    if let Some(password) = &cfg.password {
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
    if expected == 0 {
        return Ok(stream);
    }
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("handshake write: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("handshake write: {e}"))?;
    let mut dec = Decoder::new(cfg.max_reply_bytes, cfg.max_array_len);
    let mut rbuf = BytesMut::new();
    let mut scratch = [0u8; 512];
    while expected > 0 {
        match dec
            .decode(&mut rbuf)
            .map_err(|e| format!("handshake: {e}"))?
        {
            Some(Reply::Error(e)) => {
                return Err(format!(
                    "handshake rejected: {}",
                    String::from_utf8_lossy(&e)
                ))
            }
            Some(_) => expected -= 1,
            None => {
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
    }
    if !rbuf.is_empty() {
        return Err("unexpected bytes after handshake replies".into());
    }
    Ok(stream)
}
