//! TLS over our TCP streams: neither backend brings TLS, so [`TlsStream`] drives rustls' sans-I/O
//! `ClientConnection` (`read_tls` / `process_new_packets` / `write_tls`) over a
//! `TcpStream` itself. [`Stream`] is what the connection code reads and writes: plain TCP or
//! TLS.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use runtime::net::TcpConn as TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::config::TlsConfig;

/// Ciphertext read from the socket per read call: one full TLS record and its header.
const TLS_READ_CHUNK: usize = 16 * 1024 + 512;

/// The rustls client configuration for `tls`: its CA file's certificates (or the Mozilla
/// roots), the `ring` provider, TLS 1.2 and 1.3. Errors name what is wrong with the CA file.
pub(crate) fn client_config(tls: &TlsConfig) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate in {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("no certificate in {}", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name to verify the certificate of `addr` (`host:port`) against.
pub(crate) fn server_name(tls: &TlsConfig, addr: &str) -> Result<ServerName<'static>, String> {
    let host = match &tls.server_name {
        Some(name) => name.as_str(),
        None => {
            let host = crate::redirect::host_of(addr);
            host.strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
        }
    };
    ServerName::try_from(host.to_string()).map_err(|e| format!("TLS server name {host:?}: {e}"))
}

/// A connection's byte stream: plain TCP or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => s.poll_read_plain(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => s.poll_write_plain(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => s.poll_flush_tls(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => {
                s.conn.send_close_notify();
                match s.poll_flush_tls(cx) {
                    Poll::Ready(Ok(())) => Pin::new(&mut s.tcp).poll_close(cx),
                    other => other,
                }
            }
        }
    }
}

/// A rustls client connection over a TCP stream of either backend.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: ClientConnection,
    /// Ciphertext read from the socket and not yet given to rustls: `inbuf[in_start..in_end]`.
    inbuf: Box<[u8]>,
    in_start: usize,
    in_end: usize,
    /// The socket reached end of file (and rustls was told).
    eof: bool,
}

impl TlsStream {
    /// Runs the TLS handshake over `tcp`.
    pub(crate) async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = TlsStream {
            tcp,
            conn,
            inbuf: vec![0u8; TLS_READ_CHUNK].into_boxed_slice(),
            in_start: 0,
            in_end: 0,
            eof: false,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.poll_flush_tls(cx)?.is_pending() {
                return Poll::Pending;
            }
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            if self.poll_feed(cx)?.is_pending() {
                return Poll::Pending;
            }
        }
    }

    /// Gives rustls more ciphertext: what is buffered, else one socket read. `Ready(Ok)` once
    /// something was processed (or end of file noted).
    fn poll_feed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.in_start == self.in_end {
            let n = match Pin::new(&mut self.tcp).poll_read(cx, &mut self.inbuf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r?,
            };
            self.in_start = 0;
            self.in_end = n;
            if n == 0 {
                self.eof = true;
                self.conn.read_tls(&mut &[][..])?; // tells rustls about the end of file
                return Poll::Ready(Ok(()));
            }
        }
        let mut input = &self.inbuf[self.in_start..self.in_end];
        let used = self.conn.read_tls(&mut input)?;
        if used == 0 {
            return Poll::Ready(Err(io::Error::other("TLS: rustls accepted no input")));
        }
        self.in_start += used;
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Poll::Ready(Ok(()))
    }

    fn poll_read_plain(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)), // 0: the peer closed with close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.eof {
                return Poll::Ready(Ok(0));
            }
            if self.poll_feed(cx)?.is_pending() {
                return Poll::Pending;
            }
            if self.conn.wants_write() {
                // An alert or key update to answer; the writer side flushes what is left.
                let _ = self.poll_flush_tls(cx)?;
            }
        }
    }

    fn poll_write_plain(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let flushed = self.poll_flush_tls(cx)?;
            let n = self.conn.writer().write(buf)?;
            if n > 0 || buf.is_empty() {
                // Push the new records out now if the socket takes them; else the next
                // write or flush does.
                let _ = self.poll_flush_tls(cx)?;
                return Poll::Ready(Ok(n));
            }
            if flushed.is_pending() {
                return Poll::Pending; // rustls' buffer is full and the socket is too
            }
        }
    }

    /// Writes every pending TLS record to the socket.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            let mut w = PollWriter {
                tcp: &mut self.tcp,
                cx,
            };
            match self.conn.write_tls(&mut w) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
}

/// `io::Write` over a non-blocking poll: `Pending` becomes `WouldBlock` (the waker is
/// registered by the socket).
struct PollWriter<'a, 'b> {
    tcp: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for PollWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.tcp).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
