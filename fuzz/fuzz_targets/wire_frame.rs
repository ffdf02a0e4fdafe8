//! Link frame decoder over arbitrary bytes, with a small `max_frame` so length checks are hit.
//!
//! Properties: no panic; a stream decodes to the same frames whether it arrives whole or in
//! two pieces; every decoded frame re-encodes to bytes that decode to the same frame.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wire::frame::{self, Frame};

const MAX_FRAME: usize = 256;

/// Decodes until the buffer is exhausted or an error; returns frames and whether it errored.
fn decode_all(buf: &mut BytesMut) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    loop {
        match frame::decode(buf, MAX_FRAME) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}

fn reencode(f: &Frame, out: &mut BytesMut) {
    let s = |b: &bytes::Bytes| {
        std::str::from_utf8(b)
            .expect("decoder let non-UTF-8 through")
            .to_owned()
    };
    match f {
        Frame::Hello {
            version,
            role,
            instance,
            shard,
        } => frame::encode_hello(out, *version, *role, &s(instance), *shard),
        Frame::Send {
            msg_id,
            to,
            payload,
        } => frame::encode_send(out, *msg_id, &s(to), payload),
        Frame::Ack {
            msg_id,
            status,
            reason,
        } => frame::encode_ack(out, *msg_id, *status, &s(reason)),
        Frame::Deliver {
            fwd_id,
            to,
            sessions,
            payload,
        } => {
            let ids: Vec<u64> = sessions.iter().collect();
            assert_eq!(ids.len(), sessions.len());
            frame::encode_deliver(out, *fwd_id, &s(to), &ids, payload)
        }
        Frame::DeliverResult { fwd_id, delivered } => {
            frame::encode_deliver_result(out, *fwd_id, *delivered)
        }
        Frame::Ping { nonce } => frame::encode_ping(out, *nonce),
        Frame::Pong { nonce } => frame::encode_pong(out, *nonce),
        Frame::Goaway => frame::encode_goaway(out),
        Frame::Challenge { nonce } => frame::encode_challenge(out, *nonce),
        Frame::Proof { mac } => frame::encode_proof(out, mac),
        Frame::Presence { req_id, users } => {
            let list: Vec<&str> = users.iter().collect();
            assert_eq!(list.len(), users.len(), "user list view lost users");
            assert!(list.iter().all(|u| wire::valid_user_id(u)));
            frame::encode_presence(out, *req_id, list.into_iter())
        }
        Frame::PresenceResult { req_id, states } => {
            let states: Vec<frame::PresenceState> = states
                .iter()
                .map(|b| {
                    frame::PresenceState::from_u8(*b).expect("decoder let a bad state through")
                })
                .collect();
            frame::encode_presence_result(out, *req_id, &states)
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut whole = BytesMut::from(data);
    let (frames, errored) = decode_all(&mut whole);

    // The same bytes in two reads: the first byte picks the split point.
    if let Some(&first) = data.first() {
        let cut = (first as usize * data.len()) / 256;
        let mut buf = BytesMut::from(&data[..cut]);
        let (mut got, mut err) = decode_all(&mut buf);
        if !err {
            buf.extend_from_slice(&data[cut..]);
            let (more, e) = decode_all(&mut buf);
            got.extend(more);
            err = e;
        }
        assert_eq!(got, frames, "split read decoded differently");
        assert_eq!(err, errored, "split read changed the outcome");
        if !err {
            assert_eq!(buf.len(), whole.len(), "split read left different bytes");
        }
    }

    for f in &frames {
        let mut out = BytesMut::new();
        reencode(f, &mut out);
        let again = frame::decode(&mut out, MAX_FRAME)
            .expect("re-encoded frame must decode")
            .expect("re-encoded frame must be complete");
        assert_eq!(&again, f);
        assert!(out.is_empty());
    }
});
