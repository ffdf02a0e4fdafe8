//! Routers' links into this shard: `Deliver` frames in, `DeliverResult` frames out.
//!
//! Each shard listens on its own internal port, so a router reaches exactly the shard that holds
//! a session and delivery never hops between cores.

use std::rc::Rc;

use runtime::io::Stream;
use runtime::net::Listener;
use runtime::outbox::Outbox;
use wire::frame::{self, Frame, Role};

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
    let writer = runtime::link::spawn_writer(&outbox, &stream);
    let mut greeted = false;
    let reason = runtime::link::read_frames(
        &stream,
        |rx| frame::decode(rx, frame::DEFAULT_MAX_FRAME),
        |f| on_frame(shard, &outbox, &mut greeted, f),
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
