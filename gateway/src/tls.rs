//! Optional TLS termination on the client port (`--tls-cert`/`--tls-key`), for deployments
//! without a load balancer that ends TLS. rustls is sans-I/O: ciphertext read from the socket is
//! fed to it and plaintext comes out for the HTTP/WebSocket layers; plaintext queued in the
//! connection's outbox is sealed by the writer task just before it goes to the socket.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use runtime::io::Stream;
use runtime::outbox::Outbox;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Loads the certificate chain and key (PEM) into a server config shared by every shard.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    Ok(Arc::new(cfg))
}

/// A client connection's byte stream: plain, or TLS over the socket.
#[derive(Clone)]
pub struct Transport {
    pub stream: Stream,
    tls: Option<Rc<Tls>>,
}

struct Tls {
    conn: RefCell<ServerConnection>,
}

impl Transport {
    pub fn new(stream: Stream, tls: Option<&Arc<ServerConfig>>) -> io::Result<Transport> {
        let tls = match tls {
            Some(cfg) => Some(Rc::new(Tls {
                conn: RefCell::new(ServerConnection::new(cfg.clone()).map_err(io::Error::other)?),
            })),
            None => None,
        };
        Ok(Transport { stream, tls })
    }

    /// Whether TLS runs over the socket.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads until some plaintext arrives and hands it to `sink`; 0 means the peer closed.
    /// TLS records of its own (handshake, alerts) are flushed to the socket on the way, or,
    /// once the connection's writer runs (`writer`), handed to it: only it may write then
    /// (two writers could interleave records).
    pub async fn read_with<F: FnMut(&mut [u8]) + Unpin>(
        &self,
        writer: Option<&Outbox>,
        mut sink: F,
    ) -> io::Result<usize> {
        let Some(tls) = &self.tls else {
            return self.stream.read_with(sink).await;
        };
        loop {
            let mut failed = None;
            let n = self
                .stream
                .read_with(|cipher: &mut [u8]| {
                    let mut cipher: &[u8] = cipher;
                    let mut c = tls.conn.borrow_mut();
                    while !cipher.is_empty() {
                        if let Err(e) = c.read_tls(&mut cipher) {
                            failed = Some(e);
                            return;
                        }
                        if let Err(e) = c.process_new_packets() {
                            failed = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                            return;
                        }
                    }
                })
                .await?;
            // Send what rustls wants to say (handshake replies, or the alert for an error).
            match writer {
                Some(w) => w.wake(),
                None => self.flush_tls().await?,
            }
            if let Some(e) = failed {
                return Err(e);
            }
            if n == 0 {
                return Ok(0);
            }
            let mut total = 0;
            let mut buf = [0u8; 4096];
            loop {
                match tls.conn.borrow_mut().reader().read(&mut buf) {
                    Ok(0) => return Ok(total), // close_notify: the peer is done
                    Ok(k) => {
                        sink(&mut buf[..k]);
                        total += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if total > 0 {
                return Ok(total);
            }
        }
    }

    async fn flush_tls(&self) -> io::Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        let mut out = Vec::new();
        while tls.conn.borrow().wants_write() {
            tls.conn.borrow_mut().write_tls(&mut out)?;
        }
        if !out.is_empty() {
            self.stream.write_all(&out).await?;
        }
        Ok(())
    }

    /// Writes plaintext (sealed first under TLS).
    pub async fn write_all(&self, plain: &[u8]) -> io::Result<()> {
        match &self.tls {
            None => self.stream.write_all(plain).await,
            Some(tls) => {
                tls.conn.borrow_mut().writer().write_all(plain)?;
                self.flush_tls().await
            }
        }
    }

    /// The connection's writer loop: sends what the outbox gathers until it is closed and
    /// drained, sealing it under TLS.
    pub async fn run_writer(&self, outbox: &Outbox) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return outbox.run_writer(&self.stream).await;
        };
        let mut plain = BytesMut::new();
        loop {
            outbox.take_into(&mut plain);
            if plain.is_empty() {
                let wants = tls.conn.borrow().wants_write();
                if wants {
                    self.flush_tls().await.inspect_err(|_| outbox.fail())?;
                    continue;
                }
                if outbox.is_closed() {
                    tls.conn.borrow_mut().send_close_notify();
                    return self.flush_tls().await;
                }
                outbox.wait().await;
                continue;
            }
            let r = self.write_all(&plain).await;
            // Nothing kept while idle (a new batch allocates afresh).
            plain = BytesMut::new();
            r.inspect_err(|_| outbox.fail())?;
        }
    }
}
