//! Glue shared by every framed link (router<->gateway in both directions): one writer task
//! draining an [`Outbox`], and a read loop that decodes frames as bytes arrive.

use std::fmt::Display;
use std::io;
use std::rc::Rc;

use bytes::BytesMut;

use crate::io::Stream;
use crate::outbox::Outbox;
use crate::rt::{self, Task};

/// Starting capacity of a link's receive buffer; links are few and busy, so it is kept.
const LINK_RX: usize = 64 * 1024;

/// Spawns the task that sends what `outbox` gathers; when it ends (closed and drained, or a
/// write failed) it shuts the socket down so the read side ends too.
pub fn spawn_writer(outbox: &Rc<Outbox>, stream: &Stream) -> Task<io::Result<()>> {
    let (outbox, stream) = (outbox.clone(), stream.clone());
    rt::spawn(async move {
        let r = outbox.run_writer(&stream).await;
        stream.shutdown();
        r
    })
}

/// How long a peer that connected to us has to prove the link secret.
pub const PROOF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Shuts `stream` down unless `proven` is set within [`PROOF_TIMEOUT`]: a peer that connects
/// and never authenticates does not keep a link (and its held frames) open.
pub fn require_proof(stream: &Stream, proven: &Rc<std::cell::Cell<bool>>) -> Task<()> {
    let (stream, proven) = (stream.clone(), proven.clone());
    rt::spawn(async move {
        rt::sleep(PROOF_TIMEOUT).await;
        if !proven.get() {
            tracing::warn!(peer = ?stream.peer_addr(), "link peer did not authenticate in time");
            stream.shutdown();
        }
    })
}

/// Reads frames until the peer closes, a read fails, a frame does not decode, or `on_frame`
/// returns an error. Returns why the link ended, for the log.
pub async fn read_frames<T, E, D, F>(stream: &Stream, mut decode: D, mut on_frame: F) -> String
where
    E: Display,
    D: FnMut(&mut BytesMut) -> Result<Option<T>, E>,
    F: FnMut(T) -> Result<(), String>,
{
    let mut rx = BytesMut::with_capacity(LINK_RX);
    loop {
        match stream.read_with(|b| rx.extend_from_slice(b)).await {
            Ok(0) => return "closed by peer".into(),
            Err(e) => return format!("read error: {e}"),
            Ok(_) => {}
        }
        loop {
            match decode(&mut rx) {
                Ok(Some(frame)) => {
                    if let Err(why) = on_frame(frame) {
                        return why;
                    }
                }
                Ok(None) => break,
                Err(e) => return format!("bad frame: {e}"),
            }
        }
    }
}
