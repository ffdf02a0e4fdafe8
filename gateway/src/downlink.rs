//! Routers' links into this shard: `Deliver` frames in, `DeliverResult` frames out.
//!
//! Each shard listens on its own internal port, so a router reaches exactly the shard that holds
//! a session and delivery never hops between cores.

use std::rc::Rc;

use auth::LinkAuth;
use runtime::io::Stream;
use runtime::net::Listener;
use runtime::outbox::Outbox;
use wire::frame::{self, Frame, Role};
use wire::link::LinkGuard;

use crate::shard::Shard;

/// Bytes of results that may wait on one router link.
const LINK_QUEUE: usize = 8 * 1024 * 1024;

pub async fn accept_loop(shard: Rc<Shard>, listener: Listener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let shard = shard.clone();
                runtime::rt::spawn(async move {
                    let peer = stream.peer_addr();
                    let reason = serve(&shard, stream).await;
                    tracing::info!(shard = shard.id, ?peer, %reason, "router delivery link closed");
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(shard = shard.id, error = %e, "internal accept failed");
                runtime::rt::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(shard: &Shard, stream: Stream) -> String {
    let outbox = Rc::new(Outbox::new(LINK_QUEUE, 1 << 20));
    let _ = outbox.push(|b| {
        frame::encode_hello(
            b,
            frame::PROTOCOL_VERSION,
            Role::Gateway,
            &shard.cfg.instance_id,
            shard.id,
        )
    });
    let mut guard = LinkGuard::new(
        LinkAuth::new(
            shard.cfg.link_secret.clone(),
            Role::Gateway as u8,
            runtime::clock::random_u64(),
        ),
        Role::Router,
    );
    if let Some(nonce) = guard.challenge() {
        let _ = outbox.push(|b| frame::encode_challenge(b, nonce));
    }
    let writer = runtime::link::spawn_writer(&outbox, &stream);
    let proven = Rc::new(std::cell::Cell::new(guard.authenticated()));
    let _watchdog = runtime::link::require_proof(&stream, &proven);
    let mut greeted = false;
    let reason = runtime::link::read_frames(
        &stream,
        |rx| frame::decode(rx, frame::DEFAULT_MAX_FRAME),
        |f| {
            let prove = |mac: &[u8; 32]| {
                let _ = outbox.push(|b| frame::encode_proof(b, mac));
            };
            let r = guard.feed(f, prove, |f| on_frame(shard, &outbox, &mut greeted, f));
            proven.set(guard.authenticated());
            r
        },
    )
    .await;
    outbox.close();
    let _ = writer.await;
    reason
}

fn on_frame(shard: &Shard, outbox: &Outbox, greeted: &mut bool, f: Frame) -> Result<(), String> {
    match f {
        Frame::Hello { role, version, .. } if !*greeted => {
            if role != Role::Router || version != frame::PROTOCOL_VERSION {
                return Err(format!("peer is not a v{} router", frame::PROTOCOL_VERSION));
            }
            *greeted = true;
        }
        _ if !*greeted => return Err("first frame was not a router hello".into()),
        Frame::Deliver {
            fwd_id,
            to,
            sessions,
            payload,
        } => {
            let n = shard.deliver(&to, sessions.iter(), &payload);
            if outbox
                .push(|b| frame::encode_deliver_result(b, fwd_id, n))
                .is_err()
            {
                return Err("router does not read its results".into());
            }
        }
        Frame::Ping { nonce } => {
            let _ = outbox.push(|b| frame::encode_pong(b, nonce));
        }
        Frame::Pong { .. } => {}
        other => return Err(format!("unexpected frame from router: {other:?}")),
    }
    Ok(())
}
